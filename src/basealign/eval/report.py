"""What a person reads after `basealign eval`: eval.md, balance.png and generations.html, all
built from the eval.json and generations lines that eval/run.py writes; nothing is computed
from models here. `summary_rows` is the short table the model card shows too.
"""

from __future__ import annotations

import html
from pathlib import Path

from basealign.eval.capability import headline
from basealign.files import write_atomic
from basealign.report import markdown_table

HARMFUL_LABELS = ("harmless", "harmful")  # prompts that test harmlessness: shown first


def judge_focus(name: str, by_label: dict) -> str:
    """The prompts a judge is summarised on: those of its own label (helpful, harmless) when
    there are any, else all."""
    return name if name in by_label else "all"


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """(measure, value) rows: the balance at a glance."""
    rows: list[tuple[str, str]] = []
    pref = result.get("preference")
    if pref:
        overall = pref["overall"]
        rows.append(("held-out reward accuracy (all)", f"{_num(overall['reward_accuracy'])} ({overall['pairs']} pairs)"))
        for label, stats in pref["by_label"].items():
            rows.append((f"held-out reward accuracy ({label})", f"{_num(stats['reward_accuracy'])} ({stats['pairs']} pairs)"))
    for name, judge in (result.get("judges") or {}).items():
        focus = judge_focus(name, judge["by_label"])
        stats = judge["by_label"][focus]
        low, high = stats["ci95"]
        rows.append((f"{name} win rate, aligned over base ({focus} prompts)",
                     f"{stats['win_rate']:.3f} [{low:.3f}, {high:.3f}] ({stats['prompts']} prompts)"))
    for task, metrics in ((result.get("capability") or {}).get("tasks") or {}).items():
        key = headline(metrics)
        if key:
            m = metrics[key]
            rows.append((f"{task} {key.split(',')[0]}: base → aligned",
                         f"{_num(m['base'])} → {_num(m['aligned'])} ({m['delta']:+.3f})"))
    gen = result.get("generations")
    if gen:
        rows.append(("mean answer length, base → aligned (tokens)",
                     f"{gen['mean_tokens']['reference']:.1f} → {gen['mean_tokens']['policy']:.1f} "
                     f"({gen['length_change']:+.1f})"))
    return rows


def write_eval_report(out: Path, result: dict, generations: list[dict]) -> None:
    """eval.md, balance.png and (with generations) generations.html in OUT."""
    out = Path(out)
    _balance_png(out / "balance.png", result)
    if generations:
        write_atomic(out / "generations.html", generations_html(generations, result.get("run", "")))
    write_atomic(out / "eval.md", _markdown(result, bool(generations)))


def _num(value) -> str:
    return "—" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    return markdown_table(header, rows, _num)


def _markdown(result: dict, has_generations: bool) -> str:
    lines = [f"# Evaluation: {result.get('run', '')}", "", "![balance](balance.png)", ""]
    lines += _table(("measure", "value"), summary_rows(result)) + [""]
    pref = result.get("preference")
    if pref:
        lines += [f"## Preference on held-out pairs ({pref['split']} split)", "",
                  f"Reference: {pref['reference'] or 'none (margin = chosen - rejected log-probs)'}; "
                  f"per-pair numbers in `pairs.jsonl` (the lines `basealign score` writes).", ""]
        keys = ("pairs", "reward_accuracy", "margin", "chosen_logratio", "rejected_logratio")
        rows = [("all", *(pref["overall"][k] for k in keys))]
        rows += [(f"label: {k}", *(v[k] for k in keys)) for k, v in pref["by_label"].items()]
        rows += [(f"source: {k}", *(v[k] for k in keys)) for k, v in pref["by_source"].items()]
        lines += _table(("pairs of", *keys), rows) + [""]
    gen = result.get("generations")
    if gen:
        lines += ["## Generations, aligned vs base", "",
                  f"{gen['prompts']} prompts, {gen['decoding']}. Mean answer length: base "
                  f"{gen['mean_tokens']['reference']:.1f} tokens, aligned {gen['mean_tokens']['policy']:.1f} "
                  f"({gen['length_change']:+.1f}). How answers ended: base {gen['stops']['reference']}, "
                  f"aligned {gen['stops']['policy']}.", ""]
        if has_generations:
            lines += ["Side by side: [generations.html](generations.html) (and `generations.jsonl`).", ""]
    judges = result.get("judges") or {}
    if judges:
        lines += ["## Judges: aligned over base win rate (ties count half, bootstrap 95% interval)", ""]
        rows = []
        for name, judge in judges.items():
            for label, s in judge["by_label"].items():
                rows.append((name, label, s["prompts"], f"{s['win_rate']:.3f}", f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]",
                             f"{s['wins']}/{s['ties']}/{s['losses']}", s["reference_score"], s["policy_score"]))
        lines += _table(("judge", "prompts", "n", "win rate", "95% CI", "W/T/L", "base score", "aligned score"), rows)
        lines += ["", "Judges: " + "; ".join(f"{n} = {j['path']} ({'higher' if j['higher_is_better'] else 'lower'} "
                                              "is better)" for n, j in judges.items()), ""]
    cap = result.get("capability")
    if cap:
        lines += ["## General capability (lm-evaluation-harness)", ""]
        rows = []
        for task, metrics in cap["tasks"].items():
            for key, m in metrics.items():
                rows.append((task, key, _pm(m["base"], m["base_stderr"]), _pm(m["aligned"], m["aligned_stderr"]),
                             f"{m['delta']:+.4f}"))
        lines += _table(("task", "metric", "base", "aligned", "aligned - base"), rows)
        if cap.get("limit"):
            lines += ["", f"Only the first {cap['limit']} documents of each task were run."]
        lines.append("")
    return "\n".join(lines)


def _pm(value, stderr) -> str:
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"


def _balance_png(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    (pref_ax, judge_ax), (cap_ax, len_ax) = axes

    pref = result.get("preference")
    if pref and pref["by_label"]:
        labels = list(pref["by_label"])
        pref_ax.bar(labels, [pref["by_label"][k]["reward_accuracy"] or 0 for k in labels], color="tab:blue")
        _chance(pref_ax, "held-out reward accuracy by label (aligned)")
    else:
        _empty(pref_ax, "held-out reward accuracy", "no held-out pairs")

    judges = result.get("judges") or {}
    if judges:
        names, rates, errs = [], [], [[], []]
        for name, judge in judges.items():
            focus = judge_focus(name, judge["by_label"])
            s = judge["by_label"][focus]
            names.append(f"{name}\n({focus} prompts)")
            rates.append(s["win_rate"])
            errs[0].append(s["win_rate"] - s["ci95"][0])
            errs[1].append(s["ci95"][1] - s["win_rate"])
        judge_ax.bar(names, rates, yerr=errs, capsize=6, color="tab:green")
        _chance(judge_ax, "judged win rate, aligned over base (95% CI)")
    else:
        _empty(judge_ax, "judged win rate, aligned over base", "no judges (--judge NAME=PATH)")

    tasks = ((result.get("capability") or {}).get("tasks")) or {}
    picked = [(t, headline(m)) for t, m in tasks.items() if headline(m)]
    if picked:
        import numpy as np

        x = np.arange(len(picked))
        for offset, side, color in ((-0.2, "base", "tab:gray"), (0.2, "aligned", "tab:orange")):
            values = [tasks[t][k][side] for t, k in picked]
            errors = [tasks[t][k][f"{side}_stderr"] or 0 for t, k in picked]
            cap_ax.bar(x + offset, values, 0.4, yerr=errors, capsize=3, label=side, color=color)
        cap_ax.set_xticks(x, [f"{t}\n{k.split(',')[0]} ({tasks[t][k]['delta']:+.3f})" for t, k in picked], fontsize=8)
        cap_ax.set_title("general capability: base vs aligned")
        cap_ax.legend(fontsize=8)
        cap_ax.grid(axis="y", alpha=0.3)
    else:
        _empty(cap_ax, "general capability: base vs aligned", "no lm-eval tasks (--tasks)")

    gen = result.get("generations")
    if gen:
        len_ax.bar(["base", "aligned"], [gen["mean_tokens"]["reference"], gen["mean_tokens"]["policy"]],
                   color=["tab:gray", "tab:orange"])
        len_ax.set_title(f"mean answer length, tokens ({gen['length_change']:+.1f})")
        len_ax.grid(axis="y", alpha=0.3)
    else:
        _empty(len_ax, "mean answer length", "no generations")
    fig.suptitle(f"balance: {result.get('run', '')}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _chance(ax, title: str) -> None:
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def _empty(ax, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def generations_html(lines: list[dict], run: str) -> str:
    """A page a person can read: prompts that test harmlessness first, both answers side by side."""
    ordered = sorted(lines, key=lambda l: (l.get("label") not in HARMFUL_LABELS, str(l.get("label")), l["index"]))
    n = len(lines) or 1
    ref_mean = sum(l["reference_tokens"] for l in lines) / n
    pol_mean = sum(l["policy_tokens"] for l in lines) / n
    e = html.escape
    rows = []
    for line in ordered:
        rows.append(
            "<tr>"
            f"<td>{line['index']}<br><span class=meta>{e(str(line.get('label')))}<br>{e(str(line.get('source')))}</span></td>"
            f"<td><pre>{e(line['prompt_text'])}</pre></td>"
            + "".join(f"<td><pre>{e(line[side]) or '<em>(only whitespace or special tokens)</em>'}</pre><span class=meta>"
                      f"{line[side + '_tokens']} tokens, {e(line[side + '_stop'])}</span></td>"
                      for side in ("reference", "policy"))
            + "</tr>"
        )
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>generations: {e(run)}</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:6px;vertical-align:top;text-align:left}"
        "pre{white-space:pre-wrap;word-break:break-word;margin:0;font-family:inherit}"
        ".meta{color:#666;font-size:85%}th{background:#f3f3f3}"
        "</style></head><body>\n"
        f"<h1>Generations, aligned vs base: {e(run)}</h1>\n"
        f"<p>{len(lines)} prompts. Mean answer length: base {ref_mean:.1f} tokens, aligned {pol_mean:.1f} tokens "
        f"({pol_mean - ref_mean:+.1f}). Prompts that test harmlessness come first.</p>\n"
        "<table><tr><th>#</th><th>prompt</th><th>base (reference)</th><th>aligned (policy)</th></tr>\n"
        + "\n".join(rows) + "\n</table></body></html>\n"
    )
