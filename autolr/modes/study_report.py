"""A study's tables and figure: `study.md` and `study.png`, drawn from its summary (`autolr.modes.study`).

(Issue 14's move puts this module at `autolr/report/study.py`.)

Numbers are percent for metrics (recall@K, MAP@R, accuracy) and plain for costs; an interval that does
not exist (one seed) is shown as "-" and said in words, never drawn as zero width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autolr import _io

COST_LABELS = {"wall_seconds": "wall s", "train_seconds": "train s", "epochs_trained": "epochs trained",
               "trial_epochs_per_epoch": "trial epochs / epoch"}


def _pct(x: float | None, sign: bool = False) -> str:
    return "-" if x is None else (f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}")


def _interval(e: dict[str, Any] | None, sign: bool = False, percent: bool = True) -> str:
    """`mean [low, high]`; `mean` alone when there is no interval (one seed)."""
    if not e:
        return "-"
    fmt = (lambda x: _pct(x, sign)) if percent else (lambda x: f"{x:.2f}")
    if e["low"] is None:
        return fmt(e["mean"])
    return f"{fmt(e['mean'])} [{fmt(e['low'])}, {fmt(e['high'])}]"


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def metric_names(summary: dict[str, Any]) -> list[str]:
    return list(next((a["metrics"] for a in summary["arms"].values() if a.get("metrics")), {}))


def markdown(summary: dict[str, Any], seeds: int) -> str:
    """Per arm: mean [95% t-interval] of each metric and the cost; then each arm minus the baseline."""
    metric, names = summary["metric"], metric_names(summary)
    text = [f"# Study: test-split {metric}, {seeds} seed(s) per arm\n",
            f"Baseline: `{summary['baseline']}`. Means with 95% Student-t intervals over the seeds (percent);"
            " cost is the mean per run.\n"]
    if seeds < 2:
        text.append("**One seed per arm: no interval exists** (an interval needs at least 2 seeds; use"
                    " `--seeds 3` or more). The table shows single values.\n")
    header = ["arm", "seeds", *(f"{k} (%)" for k in names), *COST_LABELS.values()]
    lines = []
    for label, a in summary["arms"].items():
        cost = a["cost"]
        lines.append([f"`{label}`", f"{len(a['seeds'])}" + (f" ({a['diverged']} diverged)" if a["diverged"] else ""),
                      *(_interval(a["metrics"].get(k)) for k in names),
                      *(_interval(cost.get(k), percent=False) for k in COST_LABELS)])
    text.append(_table(header, lines))
    text.append(_paired_section(summary, names))
    return "\n".join(text)


def _paired_section(summary: dict[str, Any], names: list[str]) -> str:
    compared = {label: a for label, a in summary["arms"].items() if a.get("paired")}
    if not compared:
        return "No arm could be paired with the baseline (it needs the same seeds finished in both).\n"
    header = ["arm", "vs", "seeds", *(f"{k} diff (%)" for k in names), f"wins/losses ({summary['metric']})", "p"]
    lines = []
    for label, a in compared.items():
        main = a["paired"].get(summary["metric"]) or {}
        p = main.get("p_value")
        lines.append([f"`{label}`", f"`{a['baseline_arm']}`", len(a["paired_seeds"]),
                      *(_interval(a["paired"].get(k), sign=True) for k in names),
                      f"{main.get('wins', 0)}/{main.get('losses', 0)} of {len(a['paired_seeds'])}",
                      "-" if p is None else f"{p:.3f}"])
    return ("## Paired against the baseline\n\nArm minus baseline, seed by seed (the same data order and"
            " head initialisation): mean [95% t-interval]; wins/losses count the seeds where the arm is"
            " higher/lower. An interval that contains 0 does not show a difference.\n\n" + _table(header, lines))


def plot(summary: dict[str, Any], table: list[dict[str, Any]], path: Path) -> None:
    """Left: each arm's per-seed points, mean and interval of the main metric. Right: the metric against
    the cost (mean wall seconds per run), both with their intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric, arms = summary["metric"], list(summary["arms"])
    fig = Figure(figsize=(11, 0.35 * len(arms) + 4))  # no pyplot: leaves a user's backend alone
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for i, label in enumerate(arms):
        a = summary["arms"][label]
        points = [100 * r[metric] for r in table if r["arm"] == label and r["status"] == "ok" and r.get(metric) is not None]
        left.scatter(points, [i] * len(points), color=f"C{i % 10}", alpha=0.5, s=25)
        _point(left, a["metrics"].get(metric), None, i, f"C{i % 10}")
        _point(right, a["metrics"].get(metric), a["cost"].get("wall_seconds"), None, f"C{i % 10}", label)
    left.set_yticks(range(len(arms)), arms, fontsize=8)
    left.invert_yaxis()
    left.set(xlabel=f"test {metric} (%)", title="per seed (dots), mean and 95% interval")
    right.set(xlabel="wall seconds per run (mean)", ylabel=f"test {metric} (%)", title=f"{metric} against cost")
    right.legend(fontsize=7)
    fig.tight_layout()
    _io.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))


def _point(ax, metric: dict[str, Any] | None, cost: dict[str, Any] | None, row: int | None, color: str,
           label: str | None = None) -> None:
    """A mean with its interval as an error bar (none drawn where no interval exists)."""
    if not metric or (row is None and not cost):
        return
    y = 100 * metric["mean"]
    yerr = None if metric["low"] is None else [[y - 100 * metric["low"]], [100 * metric["high"] - y]]
    if row is not None:
        ax.errorbar([y], [row], xerr=yerr, fmt="D", color=color, capsize=4, markersize=7)
        return
    x = cost["mean"]
    xerr = None if cost["low"] is None else [[x - cost["low"]], [cost["high"] - x]]
    ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3, label=label)


def print_study(summary: dict[str, Any], folder: Path, seeds: int) -> None:
    """The main metric per arm and against the baseline, on the console; then where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    metric = summary["metric"]
    table = Table("arm", "seeds", f"{metric} (%)", "vs baseline (%)", "wins/losses", "wall s", "trial epochs / epoch",
                  title=f"study: {folder}")
    for label, a in summary["arms"].items():
        paired = (a.get("paired") or {}).get(metric)
        table.add_row(label, str(len(a["seeds"])), _interval(a["metrics"].get(metric)),
                      _interval(paired, sign=True) if paired else "baseline" if label == a["baseline_arm"] else "-",
                      f"{paired['wins']}/{paired['losses']}" if paired else "",
                      _interval(a["cost"].get("wall_seconds"), percent=False),
                      _interval(a["cost"].get("trial_epochs_per_epoch"), percent=False))
    console = Console()
    console.print(table)
    if seeds < 2:
        console.print("one seed per arm: no interval exists (use --seeds 3 or more)")
    console.print(f"written: {', '.join(str(folder / n) for n in ('study.csv', 'study.json', 'study.md', 'study.png'))}")
