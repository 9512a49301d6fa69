"""report.md and report.png from a run's metrics.jsonl, with the last sample generations."""

from __future__ import annotations

import html
import json
from pathlib import Path

from basealign.files import write_atomic

PANELS = (
    ("loss", ["loss"]),
    ("reward accuracy", ["rewards/accuracies"]),
    ("reward margin", ["rewards/margins"]),
    ("rewards", ["rewards/chosen", "rewards/rejected"]),
    ("log-probs", ["logps/chosen", "logps/rejected"]),
    ("learning rate", ["learning_rate"]),
)
SUMMARY_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
                "logps/chosen", "logps/rejected", "tokens_per_second")


def metrics_lines(path: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per line; a line cut off by a killed run is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(train lines, eval lines) of a metrics.jsonl."""
    return split_metrics(metrics_lines(path))


def split_metrics(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train lines, eval lines): a training line has its step's `loss`; the end-of-training
    summary (train_loss, train_runtime, ...) is neither."""
    train, evals = [], []
    for record in records:
        if any(k.startswith("eval/") for k in record):
            evals.append(record)
        elif "loss" in record:
            train.append(record)
    return train, evals


def markdown_table(header: tuple[str, ...], rows: list[tuple], fmt=str) -> list[str]:
    """A Markdown table's lines, each cell through FMT."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]


def report_figure(train: list[dict], evals: list[dict], title: str):
    """One panel per PANELS entry: training curves, eval points in the same colour; whole steps on x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(14, 7), constrained_layout=True)
    for ax, (name, keys) in zip(axes.flat, PANELS):
        for key in keys:
            points = [(r["step"], r[key]) for r in train if key in r]
            color = None
            if points:
                (line,) = ax.plot(*zip(*points), label=key, marker="." if len(points) < 40 else None)
                color = line.get_color()
            eval_points = [(r["step"], r[f"eval/{key}"]) for r in evals if f"eval/{key}" in r]
            if eval_points:  # same colour as the training curve, big markers
                ax.plot(*zip(*eval_points), label=f"eval {key}", linestyle="--", marker="o", color=color)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and (len(keys) > 1 or evals):
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def write_report(run_dir: Path, title: str, details: dict[str, str]) -> tuple[Path, Path]:
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train, evals = read_metrics(run_dir / "metrics.jsonl")
    fig = report_figure(train, evals, title)
    png = run_dir / "report.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in details.items()]
    lines += ["", "![training curves](report.png)", ""]
    if train:
        last = train[-1]
        lines += ["## Final training metrics", "", f"step {last['step']}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {last[k]:.4g} |" for k in SUMMARY_KEYS if k in last]
    if evals:
        last = evals[-1]
        lines += ["", "## Evaluation", "", f"step {last['step']}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in last.items() if k.startswith("eval/") and isinstance(v, (int, float))]
    lines += generations_section(run_dir)
    md = write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    return md, png


def generations_section(run_dir: Path, shown: int = 5) -> list[str]:
    """The last eval step's sample answers (RUN/eval/generations_step<k>.jsonl), base vs aligned."""
    files = sorted((Path(run_dir) / "eval").glob("generations_step*.jsonl"),
                   key=lambda f: int(f.stem.removeprefix("generations_step") or 0))
    if not files:
        return []
    samples = metrics_lines(files[-1])[:shown]
    step = samples[0]["step"] if samples else "?"
    lines = ["", f"## Sample generations (step {step})", ""]
    for sample in samples:
        lines += [f"**{sample['index']}** ({sample.get('label')}) {_one_line(sample['prompt_text'])}", "",
                  f"- base ({sample['reference_tokens']} tokens): {_one_line(sample['reference']) or '(empty)'}",
                  f"- aligned ({sample['policy_tokens']} tokens): {_one_line(sample['policy']) or '(empty)'}", ""]
    return lines


def _one_line(text: str) -> str:
    # model text is shown, never rendered: markdown viewers would run HTML in it
    return html.escape(" ".join(text.split()), quote=False)
