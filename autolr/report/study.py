"""A study's statistics and how they look: `summarize` (per arm, and paired against the baseline, from
the rows of `study.csv` alone: `read_csv`), `study.md` and `study.png` (`autolr.experiments.study` runs
the study and calls these).

Numbers are percent for metrics (recall@K, MAP@R, accuracy) and plain for costs; an interval that does
not exist (one seed) is shown as "-" and said in words, never drawn as zero width.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from autolr import fileio
from autolr.eval.stats import paired_difference, t_interval

COST_KEYS = ("wall_seconds", "train_seconds", "epochs_trained", "trial_epochs_per_epoch")

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
    fileio.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))


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


def arm_label(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """study.csv back into rows, numbers as numbers (blank cells as None)."""
    def value(text: str) -> Any:
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    with open(path, newline="") as f:
        return [{k: value(v) if k not in ("arm", "run", "status") else v for k, v in row.items()} for row in csv.DictReader(f)]


def summarize(table: list[dict[str, Any]], arm_keys: list[str], baseline: dict[str, str], metric: str) -> dict[str, Any]:
    """The study's statistics from its rows alone (study.csv): per arm, and paired against the baseline.

    Each arm is paired with the baseline arm that differs from it only in the baseline's key (with one
    arm key: the baseline arm itself), over the seeds both finished.
    """
    ok = [r for r in table if r["status"] == "ok"]
    names = [k for k in table[0] if k.startswith(("recall@", "map@", "accuracy", "top"))] if table else []
    arms: dict[str, list[dict[str, Any]]] = {}
    for r in table:
        arms.setdefault(r["arm"], [])
    for r in ok:
        arms[r["arm"]].append(r)
    (bkey, bvalue), = baseline.items()
    out: dict[str, Any] = {"metric": metric, "baseline": f"{bkey}={bvalue}", "confidence": 0.95, "arms": {}}
    for label, mine in arms.items():
        values = next((dict((k, str(r[k])) for k in arm_keys) for r in table if r["arm"] == label), {})
        entry: dict[str, Any] = {"values": values, "seeds": sorted(r["seed"] for r in mine),
                                 "diverged": sum(1 for r in table if r["arm"] == label and r["status"] != "ok")}
        entry["metrics"] = {k: _estimate([r[k] for r in mine if r[k] is not None]) for k in names}
        entry["cost"] = {k: _estimate([r[k] for r in mine if r[k] is not None]) for k in COST_KEYS}
        partner = arm_label({**values, bkey: bvalue}) if values else None
        entry["baseline_arm"] = partner
        if partner and partner != label and partner in arms:
            base = {r["seed"]: r for r in arms[partner]}
            seeds = [r["seed"] for r in sorted(mine, key=lambda r: r["seed"]) if r["seed"] in base]
            pairs = {r["seed"]: r for r in mine}
            entry["paired_seeds"] = seeds
            entry["paired"] = {
                k: paired_difference([pairs[s][k] for s in seeds], [base[s][k] for s in seeds]).as_dict()
                for k in names if seeds
            }
        out["arms"][label] = entry
    return out


def _estimate(values: list[float]) -> dict[str, Any] | None:
    return t_interval(values).as_dict() if values else None
