"""The data card (data_card.md), the console summary of `prepare`, and the length statistics
they share with stats.json."""

from __future__ import annotations

from pathlib import Path


def _summary(values: list[int]) -> dict:
    if not values:
        return {"mean": 0, "median": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    n = len(ordered)
    return {"mean": round(sum(ordered) / n, 1), "median": ordered[n // 2],
            "p95": ordered[min(n - 1, int(0.95 * n))], "max": ordered[-1]}


def length_stats(pairs, tokens: list[int] | None = None) -> dict:
    """Character lengths of prompt (all turns), chosen and rejected; prompt+reply tokens if counted."""
    stats = {
        "prompt_chars": _summary([sum(len(c) for _, c in p.prompt) for p in pairs]),
        "chosen_chars": _summary([len(p.chosen) for p in pairs]),
        "rejected_chars": _summary([len(p.rejected) for p in pairs]),
        "prompt_turns": _summary([len(p.prompt) for p in pairs]),
    }
    if tokens is not None:
        stats["tokens"] = _summary(tokens)
    return stats


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def source_path(source: dict) -> str:
    """A source's path as the recipe gave it, marked as a hub dataset or a local file."""
    return f"{source['path']} ({'hub' if source.get('hub') else 'local'})"


def source_table(stats: dict) -> str:
    """Per source: rows read, kept and rejected with the reasons, as a fixed-width console table."""
    rows = [("source", "read", "kept", "rejected", "reasons")]
    for name, s in stats["sources"].items():
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(s["rejected"].items(), key=lambda kv: (-kv[1], kv[0])))
        rows.append((name, str(s["read"]), str(s["kept"]), str(sum(s["rejected"].values())), reasons or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}"
                     for r in rows)


def write_card(path: Path, cfg: dict, stats: dict) -> None:
    splits, sources = stats["splits"], stats["sources"]
    title = cfg.get("name") or "preference pairs"
    lines = [f"# Data card: {title}", "",
             "Preference pairs in TRL's conversational format (prompt = messages, chosen/rejected = one "
             "assistant message), with source, label and metadata columns. Built by `basealign prepare`.", "",
             f"- seed: {cfg['seed']}", f"- test_size: {cfg['test_size']}",
             f"- exact de-duplication: {'on' if cfg['dedup'] else 'off'}"]
    if cfg.get("max_tokens"):
        mt = cfg["max_tokens"]
        lines.append(f"- token-length filter: prompt + longer reply <= {mt['max_length']} tokens ({mt['tokenizer']})")
    lines += ["", "## Splits", ""]
    lines += _table(["split", "rows", "harmless", "helpful"],
                    [[s, splits[s]["rows"], splits[s]["by_label"].get("harmless", 0), splits[s]["by_label"].get("helpful", 0)] for s in splits])
    lines += ["", "## Sources", ""]
    lines += _table(["source", "type", "label", "weight", "read", "kept", "train", "test", "rejected", "path"],
                    [[n, s["type"], s["label"], s["weight"], s["read"], s["kept"],
                      splits["train"]["by_source"].get(n, 0), splits["test"]["by_source"].get(n, 0),
                      sum(s["rejected"].values()), source_path(s)] for n, s in sources.items()])
    reasons = sorted({r for s in sources.values() for r in s["rejected"]})
    lines += ["", "## Drop reasons", ""]
    if reasons:
        lines += _table(["reason", "total", *sources], [[r, sum(s["rejected"].get(r, 0) for s in sources.values()),
                                                         *(s["rejected"].get(r, 0) for s in sources.values())] for r in reasons])
        lines += ["", "Every dropped row is in `rejects.jsonl` with its source, reason and line number or row index."]
    else:
        lines.append("No rows were dropped.")
    lines += ["", "## Lengths (characters; tokens when a tokenizer filter ran)", ""]
    for split, info in splits.items():
        lines += [f"### {split}", ""]
        lines += _table(["field", "mean", "median", "p95", "max"],
                        [[field, v["mean"], v["median"], v["p95"], v["max"]] for field, v in info["lengths"].items()])
        lines.append("")
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
