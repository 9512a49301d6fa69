"""report.png: whole-number step ticks and a learning-rate panel."""

from __future__ import annotations

from basealign.report import report_figure


def test_report_has_integer_step_ticks_and_a_learning_rate_panel():
    train = [{"step": s, "loss": 0.7 - 0.1 * s, "rewards/accuracies": 0.5, "learning_rate": 1e-3 * (4 - s)}
             for s in (1, 2, 3)]
    evals = [{"step": 3, "eval/loss": 0.5}]
    fig = report_figure(train, evals, "run")
    fig.canvas.draw()
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert "learning rate" in panels
    assert [tuple(line.get_ydata()) for line in panels["learning rate"].get_lines()] == [(3e-3, 2e-3, 1e-3)]
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
