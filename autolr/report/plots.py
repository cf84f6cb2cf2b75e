"""One run's figures (the paper's Fig. 2 and 4, LRs, S, loss, test metrics, depth search, pruning
cycles, retrievals), each a function of a `Run` that returns a figure, or None when the run has no data
for it. matplotlib is imported inside the drawing functions and drives a bare `Figure` (no pyplot): no
global backend is switched or needed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autolr import fileio
from autolr.report.runs import BLOCK, Run, metric_keys


def figure(title: str, xlabel: str, ylabel: str, *, logy: bool = False, size: tuple[float, float] = (7, 4.5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_yscale("log" if logy else "linear")
    ax.grid(alpha=0.3, which="both" if logy else "major")
    if xlabel.startswith("epoch"):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _block_axis(ax, n: int) -> None:
    ax.set_xticks(range(1, n + 1))
    ax.set_xlim(0.5, n + 0.5)


def _epoch_variation(run: Run) -> list[tuple[int, list[float]]]:
    """Each epoch's per-block weight variation: logged on the epoch row, else its kept AutoLR trial's."""
    trials = {(r["epoch"], r["trial"]): r.get("v") for r in run.rows_of("trial")}
    rows = ((r["epoch"], r.get("v") or trials.get((r["epoch"], r.get("kept_trial")))) for r in run.rows_of("epoch"))
    return [(epoch, v) for epoch, v in rows if v]


def plot_variation(run: Run):
    """The paper's Fig. 2: AutoLR wants each epoch's line to rise from the low blocks to the high ones."""
    series = _epoch_variation(run)
    if not series:
        return None
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, ax = figure(f"{run.name}: weight variation per block, one line per epoch",
                      "block (1 = lowest)", "weight variation ||W(t) - W(t-1)|| / n", logy=True)
    cmap, norm = colormaps["viridis"], Normalize(series[0][0], max(series[-1][0], series[0][0] + 1))
    for epoch, v in series:  # early epochs dark, late ones light
        ax.plot(range(1, len(v) + 1), v, marker=".", color=cmap(norm(epoch)), label=f"epoch {epoch}")
    if len(series) <= 8:
        ax.legend(fontsize="small")
    else:
        fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="epoch")
    _block_axis(ax, len(series[0][1]))
    return fig


def plot_trials(run: Run, max_epochs: int = 12):
    """The paper's Fig. 4a: every trial of the epochs that were rerun, and the target their LRs aimed at.

    An epoch accepted at its first trial is already a line in `weight_variation.png`.
    """
    trials = run.rows_of("trial")
    counts = Counter(r["epoch"] for r in trials)
    rerun = [e for e in sorted(counts) if counts[e] > 1]
    epochs = (rerun or sorted(counts))[:max_epochs]
    if not epochs:
        return None
    from matplotlib.figure import Figure

    cols = min(len(epochs), 3)
    rows = math.ceil(len(epochs) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    kept = {r["epoch"]: r.get("kept_trial") for r in run.rows_of("epoch")}
    for ax, epoch in zip(axes, epochs, strict=False):
        mine = [r for r in trials if r["epoch"] == epoch]
        blocks = range(1, len(mine[0]["v"]) + 1)
        for r in mine:
            style = "-" if r.get("accepted") or r["trial"] == kept.get(epoch) else ":"
            ax.plot(blocks, r["v"], style, marker=".", color=f"C{(r['trial'] - 1) % 10}", label=f"trial {r['trial']}")
        target = next((r["target"] for r in mine if r.get("target")), None)
        if target:
            ax.plot(blocks, target, "--", color="black", label="target")
        ax.set(yscale="log", title=f"epoch {epoch}: {trial_outcome(mine, kept.get(epoch))}", xlabel="block")
        _block_axis(ax, len(blocks))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    for ax in axes[len(epochs):]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("weight variation")
    shown = f"{len(rerun)} of {len(counts)} epochs were rerun" if rerun else "no epoch was rerun"
    shown += f", the first {max_epochs} shown" if len(epochs) < len(rerun or counts) else ""
    fig.suptitle(f"{run.name}: weight variation of every AutoLR trial ({shown}; solid = kept)")
    return fig


def trial_outcome(trials: list[dict[str, Any]], kept: int | None) -> str:
    accepted = [r["trial"] for r in trials if r.get("accepted")]
    if accepted:
        return f"trial {accepted[0]} accepted"
    return f"none reached tau, kept trial {kept}" if kept else "unfinished"


def _group_names(row: dict[str, Any]) -> list[str]:
    """Names for an epoch row's LRs; rows from before `groups` was logged were stem, blocks, head."""
    n = len(row["lrs"])
    if row.get("groups") and len(row["groups"]) == n:
        return row["groups"]
    return ["stem", *(f"block{i}" for i in range(1, n - 1)), "head"] if n >= 3 else [f"group {i}" for i in range(n)]


def plot_lrs(run: Run):
    """The paper's Fig. 4b, readable at 16+ blocks: a block x epoch heatmap of the LRs (log colour), and
    above it the stem, neck and head as lines beside the lowest and highest block."""
    rows = [r for r in run.rows_of("epoch") if r.get("lrs")]
    if not rows:
        return None
    names = _group_names(rows[-1])
    rows = [r for r in rows if len(r["lrs"]) == len(names)]
    blocks = [i for i, n in enumerate(names) if BLOCK.match(n)]
    if len(blocks) < 2:
        return _lr_lines(run, rows, names, list(range(len(names))))
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(8, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.6])
    others = [i for i in range(len(names)) if i not in blocks]
    for i in [*others, blocks[0], blocks[-1]]:
        label = names[i] + (" (lowest)" if i == blocks[0] else " (highest)" if i == blocks[-1] else "")
        style = {"head": dict(color="black", linestyle="--", linewidth=2)}.get(names[i], {})
        top.plot(epochs, [r["lrs"][i] for r in rows], marker="o", label=label, **style)
    top.set(yscale="log", ylabel="learning rate", title=f"{run.name}: learning rate per group ({run.schedule})")
    top.grid(alpha=0.3, which="both")
    top.legend(fontsize="x-small", loc="best", ncol=2)
    lrs = [[r["lrs"][i] for r in rows] for i in blocks]  # [block][epoch]
    low, high = min(min(v) for v in lrs), max(max(v) for v in lrs)
    edges_x = [e - 0.5 for e in epochs] + [epochs[-1] + 0.5]
    mesh = bottom.pcolormesh(edges_x, [k + 0.5 for k in range(len(blocks) + 1)], lrs, shading="flat",
                             cmap="viridis", norm=LogNorm(low, high if high > low else low * 1.0001))
    fig.colorbar(mesh, ax=bottom, label="learning rate")
    bottom.set(xlabel="epoch", ylabel="block (1 = lowest)", title="every block's LR at the end of each epoch")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _lr_lines(run: Run, rows, names, which):
    fig, ax = figure(f"{run.name}: learning rate per group ({run.schedule})", "epoch", "learning rate", logy=True)
    for i in which:
        ax.plot([r["epoch"] for r in rows], [r["lrs"][i] for r in rows], marker="o", label=names[i])
    ax.legend(fontsize="x-small")
    return fig


def plot_sorting_quality(run: Run):
    """AutoLR's acceptance test per trial: S against tau (accepted, rejected, or kept after the cap)."""
    trials = run.rows_of("trial")
    if not trials:
        return None
    fig, ax = figure(f"{run.name}: sorting quality of every trial", "epoch (its trials left to right)",
                      "sorting quality S")
    kept = {r["epoch"]: r.get("kept_trial") for r in run.rows_of("epoch")}
    counts = Counter(r["epoch"] for r in trials)

    def x(r):
        n = counts[r["epoch"]]
        return r["epoch"] + (0.6 * (r["trial"] - 1) / (n - 1) - 0.3 if n > 1 else 0)

    groups = {"accepted": ("o", "tab:green", lambda r: r.get("accepted")),
              "rejected": ("x", "tab:red", lambda r: not r.get("accepted") and r["trial"] != kept.get(r["epoch"])),
              "kept (no trial reached tau)": ("*", "tab:orange",
                                              lambda r: not r.get("accepted") and r["trial"] == kept.get(r["epoch"]))}
    for label, (marker, color, chosen) in groups.items():
        mine = [r for r in trials if chosen(r)]
        if mine:
            ax.scatter([x(r) for r in mine], [r["sorting_quality"] for r in mine], marker=marker, color=color,
                       s=60, label=label, zorder=3)
    taus = {r["epoch"]: r["tau"] for r in trials if "tau" in r}
    if taus:
        epochs = sorted(taus)
        edges = [e - 0.5 for e in epochs] + [epochs[-1] + 0.5]  # tau holds for a whole epoch
        ax.step(edges, [*(taus[e] for e in epochs), taus[epochs[-1]]], where="post", color="black",
                linestyle="--", label="tau")
    ax.set_ylim(min(0.0, min(r["sorting_quality"] for r in trials)) - 0.02, 1.02)
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_loss(run: Run):
    rows = [r for r in run.rows_of("epoch") if "loss" in r]
    if not rows:
        return None
    fig, ax = figure(f"{run.name}: training loss", "epoch", "loss (mean over the epoch)")
    trials = [r for r in run.rows_of("trial") if "loss" in r]
    if trials:
        ax.scatter([r["epoch"] for r in trials], [r["loss"] for r in trials], facecolors="none", edgecolors="grey",
                   s=40, label="every AutoLR trial", zorder=3)
    ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], marker="o", zorder=4,
            label="epoch (its kept trial)" if trials else "epoch")
    ax.legend(fontsize="small")
    return fig


def _test_points(run: Run) -> list[tuple[int, dict[str, Any]]]:
    """(epoch, test metrics): before training, every `eval.every` epoch, and the final evaluation."""
    points = [(0, run.initial)] if run.initial else []
    points += [(r["epoch"], r["test"]) for r in run.rows_of("epoch") if r.get("test")]
    if run.metrics:
        epochs = [r["epoch"] for r in run.rows_of("epoch")]
        points.append((max(epochs) if epochs else run.metrics.get("epochs", 1), run.metrics))
    return points


def plot_test_metrics(run: Run):
    """Markers where the test split was measured; a line joins only measurements one epoch apart, so
    no line runs through epochs that were never measured."""
    points = dict(_test_points(run))  # by epoch: the final evaluation replaces an `eval.every` one there
    keys = metric_keys(list(points.values()))
    if not keys:
        return None
    fig, ax = figure(f"{run.name}: test metrics (epoch 0 = before fine-tuning; markers = measured)", "epoch", "%")
    for n, key in enumerate(keys):
        xy = sorted((e, 100 * m[key]) for e, m in points.items() if key in m)
        colour = f"C{n % 10}"
        ax.plot(*zip(*xy, strict=True), marker="o", linestyle="none", color=colour, label=key)
        for (e0, y0), (e1, y1) in zip(xy, xy[1:], strict=False):
            if e1 - e0 == 1:
                ax.plot([e0, e1], [y0, y1], color=colour)
    gaps = any(b - a > 1 for a, b in zip(sorted(points), sorted(points)[1:], strict=False))
    ax.legend(fontsize="small", title="not measured between markers" if gaps else None, title_fontsize="x-small")
    return fig


def plot_candidates(run: Run):
    """Algorithm 1's depth search: the validation score of each number of dropped top blocks."""
    rows = sorted(run.candidates, key=lambda r: r["drop_top"])
    if not rows:
        return None
    metric = rows[0].get("metric") or "score"
    estimator = f", estimator {rows[0]['estimator']}" if rows[0].get("estimator") else ""
    fig, ax = figure(f"{run.name}: depth search ({metric} on the validation split{estimator})",
                      "top blocks dropped", f"{metric} (%)")
    ax.plot([r["drop_top"] for r in rows], [100 * r["score"] for r in rows], marker="o", label="candidate")
    depth = (run.metrics or {}).get("prune.depth")
    if depth is not None:
        ax.axvline(depth, color="tab:green", linestyle="--", label=f"chosen: drop {depth}")
    ax.set_xticks([r["drop_top"] for r in rows])
    ax.legend(fontsize="small")
    return fig


def remaining_axis(ax, percents: list[float]) -> None:
    """Log x from dense (left) to sparse (right), ticked at the measured levels, as SILO's figures."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted(set(percents)), [f"{p:.1f}" for p in sorted(set(percents))])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(max(percents) * 1.15, min(percents) / 1.15)
    ax.tick_params(axis="x", labelrotation=45)


def plot_cycles(run: Run):
    """Iterative pruning: the score after each cycle against the weights left, and the cycle's max LR."""
    rows = run.cycles
    if not rows:
        return None
    from matplotlib.figure import Figure

    metric = rows[0].get("metric", "score")
    fig = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    percents = [100 * r["remaining"] for r in rows]
    top.plot(percents, [100 * r["score"] for r in rows], marker="o", label=cycle_schedule(run))
    top.set(title=f"{run.name}: {metric} after each pruning cycle", ylabel=f"{metric} (%)")
    top.legend(fontsize="small")
    lr_rows = [r for r in rows if r.get("max_lr") is not None]
    bottom.plot([100 * r["remaining"] for r in lr_rows], [r["max_lr"] for r in lr_rows], marker="o", color="C1")
    bottom.set(xlabel="weights remaining (%)", ylabel="cycle's max LR")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    remaining_axis(bottom, percents)
    return fig


def cycle_schedule(run: Run) -> str:
    rows = run.cycles
    return (rows[0].get("lr_schedule") if rows else None) or (run.metrics or {}).get("prune.lr_schedule") or run.schedule


def plot_retrievals(run: Run):
    """The retrieval grid (`autolr.report.retrievals`): it needs torch, the model and the data, so it loads only here."""
    from autolr.report.retrievals import plot_retrievals as draw

    return draw(run)


PLOTS: dict[str, tuple[str, Callable[[Run], Any]]] = {  # file -> (what it shows, drawing function)
    "weight_variation.png": ("Weight variation per block, per epoch (Fig. 2)", plot_variation),
    "weight_variation_trials.png": ("Weight variation of every AutoLR trial (Fig. 4a)", plot_trials),
    "lr_per_group.png": ("Learning rate per group over epochs (Fig. 4b)", plot_lrs),
    "sorting_quality.png": ("Sorting quality per trial", plot_sorting_quality),
    "loss.png": ("Training loss", plot_loss),
    "test_metrics.png": ("Test metrics over epochs", plot_test_metrics),
    "prune_candidates.png": ("Depth search candidates", plot_candidates),
    "pruning_cycles.png": ("Score against weights remaining", plot_cycles),
    "retrievals.png": ("Test queries and their top-K neighbours (green: same class)", plot_retrievals),
}


def save_png(fig, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # a constant series (one LR all run) on a log axis: matplotlib widens it
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high ylims")
        fileio.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
