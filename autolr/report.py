"""`autolr report` and `autolr compare`: plots and tables read back from run folders.

Everything here reads only what a run folder holds (recipe.toml, log.jsonl, metrics.json), so a report
can be redrawn for any run, finished or not, without torch. The recipe is read as plain TOML rather than
validated, so that a run recorded under an older schema still reports. matplotlib is imported inside the
drawing functions and drives a bare `Figure` (no pyplot): no global backend is switched or needed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr import _io
from autolr.errors import AutolrError
from autolr.recipe import tomllib

log = logging.getLogger("autolr")

METRIC_PREFIXES = ("recall@", "map@", "accuracy")
BLOCK = re.compile(r"block(\d+)$")  # a block's param group name


# -- reading a run folder ------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    recipe: dict[str, Any]
    rows: list[dict[str, Any]]
    metrics: dict[str, Any] | None  # None: the run has not finished

    def rows_of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == kind]

    def setting(self, key: str, default: Any = None) -> Any:
        """A recipe value by its dotted name, e.g. `train.schedule`."""
        section, name = key.split(".")
        return self.recipe.get(section, {}).get(name, default)

    @property
    def name(self) -> str:
        return self.setting("output.name") or self.path.name

    @property
    def schedule(self) -> str:
        """The LR schedule that tells runs apart: SILO's per-cycle schedule, else train.schedule."""
        if self.setting("prune.mode") == "iterative":
            return self.setting("prune.lr_schedule", "?")
        return self.setting("train.schedule", "?")

    @property
    def initial(self) -> dict[str, Any]:
        """Test metrics before fine-tuning: in metrics.json once finished, in the checkpoints before."""
        if self.metrics and "initial" in self.metrics:
            return self.metrics["initial"]
        f = self.path / "checkpoints" / "initial.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    @property
    def cycles(self) -> list[dict[str, Any]]:
        return self.rows_of("cycle") or (self.metrics or {}).get("cycles", [])

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return self.rows_of("prune_candidate") or (self.metrics or {}).get("prune.candidates", [])


def read_run(run_dir: str | Path, *, started: bool = True) -> Run:
    """A run folder's recipe, log rows and metrics; an error that says what to give for anything else.

    `started`: the run must have logged something (a report of nothing is an error; a comparison lists
    such a run as unfinished)."""
    path = Path(run_dir)
    if not (path / "recipe.toml").is_file():
        raise AutolrError(f"{path} is not an autolr run folder (no recipe.toml): give the folder that "
                          "`autolr run` printed, which holds recipe.toml, log.jsonl and metrics.json")
    metrics_file = path / "metrics.json"
    if started and not (path / "log.jsonl").is_file() and not metrics_file.is_file():
        raise AutolrError(f"{path} has no log.jsonl or metrics.json yet: the run has not finished an epoch; "
                          "report it once it has")
    try:
        recipe = tomllib.loads((path / "recipe.toml").read_text())
    except tomllib.TOMLDecodeError as e:
        raise AutolrError(f"{path / 'recipe.toml'}: not valid TOML ({e})") from None
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return Run(path, recipe, _io.read_jsonl(path / "log.jsonl"), metrics)


def metric_keys(dicts: list[dict[str, Any]]) -> list[str]:
    """The metric names in these dicts, Recall@K by K first, then MAP@R and accuracy."""
    keys = {k for d in dicts for k, v in d.items() if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float))}

    def order(key: str) -> tuple[int, float, str]:
        k = re.fullmatch(r"recall@(\d+)", key)
        return (0, int(k[1]), key) if k else (1, 0, key)

    return sorted(keys, key=order)


# -- plots -----------------------------------------------------------------------------------------------
def _figure(title: str, xlabel: str, ylabel: str, *, logy: bool = False, size: tuple[float, float] = (7, 4.5)):
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

    fig, ax = _figure(f"{run.name}: weight variation per block, one line per epoch",
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
        ax.set(yscale="log", title=f"epoch {epoch}: {_trial_outcome(mine, kept.get(epoch))}", xlabel="block")
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


def _trial_outcome(trials: list[dict[str, Any]], kept: int | None) -> str:
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
    fig, ax = _figure(f"{run.name}: learning rate per group ({run.schedule})", "epoch", "learning rate", logy=True)
    for i in which:
        ax.plot([r["epoch"] for r in rows], [r["lrs"][i] for r in rows], marker="o", label=names[i])
    ax.legend(fontsize="x-small")
    return fig



def plot_sorting_quality(run: Run):
    """AutoLR's acceptance test per trial: S against tau (accepted, rejected, or kept after the cap)."""
    trials = run.rows_of("trial")
    if not trials:
        return None
    fig, ax = _figure(f"{run.name}: sorting quality of every trial", "epoch (its trials left to right)",
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
    fig, ax = _figure(f"{run.name}: training loss", "epoch", "loss (mean over the epoch)")
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
    fig, ax = _figure(f"{run.name}: test metrics (epoch 0 = before fine-tuning; markers = measured)", "epoch", "%")
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
    fig, ax = _figure(f"{run.name}: depth search ({metric} on the validation split{estimator})",
                      "top blocks dropped", f"{metric} (%)")
    ax.plot([r["drop_top"] for r in rows], [100 * r["score"] for r in rows], marker="o", label="candidate")
    depth = (run.metrics or {}).get("prune.depth")
    if depth is not None:
        ax.axvline(depth, color="tab:green", linestyle="--", label=f"chosen: drop {depth}")
    ax.set_xticks([r["drop_top"] for r in rows])
    ax.legend(fontsize="small")
    return fig


def _remaining_axis(ax, percents: list[float]) -> None:
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
    top.plot(percents, [100 * r["score"] for r in rows], marker="o", label=_cycle_schedule(run))
    top.set(title=f"{run.name}: {metric} after each pruning cycle", ylabel=f"{metric} (%)")
    top.legend(fontsize="small")
    lr_rows = [r for r in rows if r.get("max_lr") is not None]
    bottom.plot([100 * r["remaining"] for r in lr_rows], [r["max_lr"] for r in lr_rows], marker="o", color="C1")
    bottom.set(xlabel="weights remaining (%)", ylabel="cycle's max LR")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    _remaining_axis(bottom, percents)
    return fig


def _cycle_schedule(run: Run) -> str:
    rows = run.cycles
    return (rows[0].get("lr_schedule") if rows else None) or (run.metrics or {}).get("prune.lr_schedule") or run.schedule


def plot_retrievals(run: Run):
    """The retrieval grid (`autolr.retrievals`): it needs torch, the model and the data, so it loads only here."""
    from autolr.retrievals import plot_retrievals as draw

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


def _save_png(fig, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # a constant series (one LR all run) on a log axis: matplotlib widens it
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high ylims")
        _io.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))


# -- the report ------------------------------------------------------------------------------------------
def write_report(run_dir: str | Path) -> list[Path]:
    """Draw every plot the run has data for, and `summary.md`, into RUN_DIR/report/; returns the files.

    A plot without data is skipped and one that fails is logged as a warning: the report is called at
    the end of `autolr run` and must never fail the run it describes. Both are listed in summary.md.
    """
    run = read_run(run_dir)
    out = run.path / "report"
    written, skipped = [], {}
    for name, (_, draw) in PLOTS.items():
        try:
            fig = draw(run)
            if fig is None:
                skipped[name] = "no data in this run"
                continue
            _save_png(fig, out / name)
            written.append(out / name)
        except Exception as e:  # a broken plot must not lose the others, nor fail the run
            log.warning("report: could not draw %s: %s: %s", name, type(e).__name__, e)
            skipped[name] = f"failed ({type(e).__name__}: {e})"
    _io.write_text(out / "summary.md", summary(run, [p.name for p in written], skipped))
    return [*written, out / "summary.md"]


def summary(run: Run, plots: list[str], skipped: dict[str, str]) -> str:
    """The run in Markdown: recipe highlights, test metrics before/after, epochs, trials, pruning, plots."""
    parts = [f"# {run.name}\n\nRun folder: `{run.path}`" + ("" if run.metrics else " (unfinished: no metrics.json)"),
             "## Recipe\n\n" + _md_table(["", ""], _highlights(run))]
    if run.metrics:
        parts.append("## Test metrics (%)\n\n" + _final_table(run))
    sections = [("Epochs", _epoch_table), ("AutoLR trials", _trial_section), ("Depth search", _candidate_table),
                ("Pruning cycles", _cycle_table)]
    parts += [f"## {title}\n\n{text}" for title, make in sections if (text := make(run))]
    links = [f"![{PLOTS[name][0]}]({name})" for name in plots]
    parts.append("## Plots\n\n" + ("\n\n".join(links) if links else "none"))
    if skipped:
        parts.append("Not drawn:\n\n" + "\n".join(f"- `{name}`: {why}" for name, why in skipped.items()))
    return "\n\n".join(parts) + "\n"


def _highlights(run: Run) -> list[list[str]]:
    s = run.setting
    dropped = (run.metrics or {}).get("drop_top", s("model.drop_top", 0))  # a search's chosen depth
    rows = [["model", f"{s('model.name')} (pretrained: {s('model.pretrained')}), top {dropped} blocks dropped"],
            ["data", f"{s('data.name')}, image size {s('data.image_size')}, batch {s('data.batch_size')}"],
            ["training", f"{s('train.epochs')} epochs, schedule {s('train.schedule')}, lr {s('train.lr')}, "
                         f"head lr {s('train.head_lr')}, seed {s('train.seed')}"]]
    if s("prune.mode", "fixed") == "iterative":  # every cycle's LR comes from prune.lr_schedule
        rows[-1][1] = (f"{s('train.epochs')} epochs in cycle 0, then {s('prune.cycle_epochs') or s('train.epochs')}"
                       f" per cycle; every group's LR from prune.lr_schedule; seed {s('train.seed')}")
    if s("train.schedule") == "autolr" and s("prune.mode", "fixed") != "iterative":
        rows.append(["AutoLR", f"tau {s('autolr.tau')} (strict: {s('autolr.strict')}), alpha {s('autolr.alpha')}, "
                               f"beta {s('autolr.beta')}, at most {s('autolr.max_trials')} trials per epoch"])
    mode = s("prune.mode", "fixed")
    if mode == "search":
        rows.append(["pruning", f"depth search, estimator {s('prune.estimator')}, metric {s('prune.metric')}"])
    elif mode == "iterative":
        rows.append(["pruning", f"iterative, {s('prune.cycles')} cycles of {s('prune.rate')}, "
                                f"{s('prune.criterion')}, LR schedule {s('prune.lr_schedule')}"])
    if run.metrics and "wall_time" in run.metrics:
        rows.append(["wall time", f"{run.metrics['wall_time']:.0f} s"])
    return rows


def _final_table(run: Run) -> str:
    before = run.initial
    rows = []
    for key in metric_keys([run.metrics]):
        after, was = run.metrics[key], before.get(key)
        rows.append([key, _pct(was), _pct(after), "" if was is None else f"{100 * (after - was):+.2f}"])
    return _md_table(["metric", "before", "after", "gain"], rows)


def _epoch_table(run: Run) -> str:
    rows = run.rows_of("epoch")
    tests = metric_keys([r.get("test", {}) for r in rows])[:1]
    header = ["epoch", "loss", "seconds", "images/s"]
    autolr = any("trials" in r for r in rows)
    header += ["trials", "kept", "S"] if autolr else []
    body = []
    for r in rows:
        line = [r["epoch"], _num(r.get("loss")), _num(r.get("seconds"), 1), _num(r.get("images_per_s"), 1)]
        line += [r.get("trials", ""), r.get("kept_trial", ""), _num(r.get("sorting_quality"), 3)] if autolr else []
        body.append(line + [_pct(r.get("test", {}).get(k)) for k in tests])
    return _md_table(header + [f"test {k} (%)" for k in tests], body) if body else ""


def _trial_section(run: Run) -> str:
    trials = run.rows_of("trial")
    if not trials:
        return ""
    kept = {r["epoch"]: r.get("kept_trial") for r in run.rows_of("epoch")}
    by_epoch = {e: [r for r in trials if r["epoch"] == e] for e in sorted({r["epoch"] for r in trials})}
    outcome = "\n".join(f"- epoch {e}: {_trial_outcome(rows, kept.get(e))} ({len(rows)} trial(s))"
                        for e, rows in by_epoch.items())
    table = _md_table(["epoch", "trial", "S", "tau", "accepted", "loss"],
                      [[r["epoch"], r["trial"], _num(r.get("sorting_quality"), 3), _num(r.get("tau"), 4),
                        "yes" if r.get("accepted") else "no", _num(r.get("loss"))] for r in trials])
    return f"{outcome}\n\n{table}"


def _candidate_table(run: Run) -> str:
    rows = sorted(run.candidates, key=lambda r: r["drop_top"])
    if not rows:
        return ""
    depth = (run.metrics or {}).get("prune.depth")
    chosen = f"Chosen: drop the top {depth} blocks.\n\n" if depth is not None else ""
    return chosen + _md_table(["drop top", f"{rows[0].get('metric', 'score')} (%)", "seconds"],
                              [[r["drop_top"], _pct(r["score"]), _num(r.get("seconds"), 1)] for r in rows])


def _cycle_table(run: Run) -> str:
    rows = run.cycles
    if not rows:
        return ""
    return _md_table(["cycle", "weights remaining (%)", "max LR", f"{rows[0].get('metric', 'score')} (%)"],
                     [[r.get("cycle", ""), f"{100 * r['remaining']:.1f}", _num(r.get("max_lr"), 4), _pct(r["score"])]
                      for r in rows])


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


# -- comparing runs --------------------------------------------------------------------------------------
@dataclass
class Table:
    """Cells are numbers (percent, seconds), text, or None for blank; Markdown shows 2 decimals, CSV 4."""

    title: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def cells(self, digits: int = 2) -> list[list[str]]:
        return [["" if c is None else f"{c:.{digits}f}" if isinstance(c, float) else str(c) for c in row]
                for row in self.rows]

    def markdown(self) -> str:
        return f"## {self.title}\n\n{_md_table(self.header, self.cells())}\n"

    def csv(self) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([self.header, *self.cells(4)])
        return buf.getvalue()


@dataclass
class Comparison:
    tables: list[Table]
    files: list[Path]


def write_comparison(run_dirs: list[str | Path], output: str | Path = ".") -> Comparison:
    """Test metrics of several runs side by side (the paper's Table 5) as compare.md and compare.csv.

    Runs with different metrics get blank cells; an unfinished run (no metrics.json) is listed as such.
    Iterative-pruning runs add `compare_cycles.csv` and `compare_cycles.png`: the score at every level of
    weights remaining, one line per LR schedule.
    """
    if not run_dirs:
        raise AutolrError("compare needs at least one run folder: autolr compare RUN_DIR [RUN_DIR ...]")
    runs = [read_run(d, started=False) for d in run_dirs]
    labels = _labels(runs)
    out = Path(output)
    tables = [_metrics_table(runs, labels)]
    files = [out / "compare.md", out / "compare.csv"]
    _io.write_text(files[1], tables[0].csv())
    pruned = [(run, label) for run, label in zip(runs, labels, strict=True) if run.cycles]
    if pruned:
        tables.append(_cycles_table(pruned))
        _io.write_text(out / "compare_cycles.csv", tables[1].csv())
        _save_png(_compare_cycles_figure(pruned), out / "compare_cycles.png")
        files += [out / "compare_cycles.csv", out / "compare_cycles.png"]
    _io.write_text(files[0], "\n".join(t.markdown() for t in tables))
    return Comparison(tables, files)


def _labels(runs: list[Run]) -> list[str]:
    """Each run's output.name where it is unique among these runs, else its folder's name."""
    names = [run.name for run in runs]
    return [run.name if names.count(run.name) == 1 else run.path.name for run in runs]


def _metrics_table(runs: list[Run], labels: list[str]) -> Table:
    keys = metric_keys([r.metrics for r in runs if r.metrics])
    table = Table("Test metrics (%)", ["run", "model", "schedule", "drop top", *keys, "wall time (s)"])
    for run, label in zip(runs, labels, strict=True):
        m = run.metrics or {}
        name = label if run.metrics else f"{label} (unfinished)"
        cells = [100 * m[k] if k in m else None for k in keys]
        table.rows.append([name, m.get("model") or run.setting("model.name"), run.schedule,
                           m.get("drop_top", run.setting("model.drop_top")), *cells,
                           float(m["wall_time"]) if "wall_time" in m else None])
    return table


def _cycles_table(pruned: list[tuple[Run, str]]) -> Table:
    levels = sorted({round(100 * c["remaining"], 1) for run, _ in pruned for c in run.cycles}, reverse=True)
    table = Table("Score (%) by weights remaining (%)", ["run", "schedule", "metric", *(f"{p:.1f}" for p in levels)])
    for run, label in pruned:
        score = {round(100 * c["remaining"], 1): 100 * c["score"] for c in run.cycles}
        table.rows.append([label, _cycle_schedule(run), run.cycles[0].get("metric", "score"),
                           *(score.get(p) for p in levels)])
    return table


def _compare_cycles_figure(pruned: list[tuple[Run, str]]):
    schedules = [_cycle_schedule(run) for run, _ in pruned]
    names = [s if schedules.count(s) == 1 else f"{s} ({label})" for s, (_, label) in zip(schedules, pruned, strict=True)]
    metric = pruned[0][0].cycles[0].get("metric", "score")
    fig, ax = _figure(f"{metric} against weights remaining, one line per run", "weights remaining (%)",
                      f"{metric} (%)")
    percents = []
    for (run, _), name in zip(pruned, names, strict=True):
        xs = [100 * c["remaining"] for c in run.cycles]
        ax.plot(xs, [100 * c["score"] for c in run.cycles], marker="o", label=name)
        percents += xs
    _remaining_axis(ax, percents)
    ax.legend(fontsize="small")
    return fig
