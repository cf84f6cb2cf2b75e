"""`autolr sweep`: one recipe over a grid of overrides, each cell scored on the validation split.

Every cell is a selection run (`autolr.run(..., selection=True)`: trained on the training classes minus
the validation classes, scored on those), so choosing the best cell never looks at the test split; only
`final=True` then trains the chosen cell on all training classes and reports the test split. Cells run
in their own folders, `cell-<key>=<value>_<key2>=<value2>`, and a finished cell is never rerun, so an
interrupted sweep resumes where it stopped (and a grid extended later only runs its new cells).

A cell whose first-epoch AutoLR ramp cannot ascend (beta * max(v) <= alpha * min(v), method.md 3.3) ran
with the repair rule instead; the tables and the heatmap mark it (the paper's Fig. 3).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr import fileio
from autolr.console import say
from autolr.errors import AutolrError, Diverged
from autolr.recipe import Recipe, load_recipe
from autolr.rundir import grid_folder, is_main_process, launcher_state, main_reads
from autolr.runner import run


@dataclass
class Grid:
    key: str  # section.key
    values: list[str]  # as typed (TOML syntax), one per cell


@dataclass
class Cell:
    name: str  # its folder
    values: dict[str, str]  # grid key -> value as typed
    recipe: Recipe
    metrics: dict[str, Any] | None = None  # None until run; {} when it diverged
    ramp: str = "-"  # "ascending", "non-ascending" or "-" (not AutoLR, or no first trial logged)
    error: str = ""


@dataclass
class SweepResult:
    folder: Path
    metric: str
    cells: list[Cell]
    chosen: Cell | None
    final: dict[str, Any] | None = field(default=None)


def parse_grid(text: str) -> Grid:
    """`section.key=v1,v2,...`; commas inside brackets stay in one value (`train.milestones=[3,4],[5]`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in re.split(r",(?![^\[]*\])", raw) if v.strip()]
    if not sep or "." not in key or not values:
        raise AutolrError(f"--grid {text!r}: expected section.key=v1,v2,..., e.g. --grid autolr.alpha=1,2,3")
    return Grid(key, values)


def make_cells(recipe: str | Path, grids: list[Grid], overrides: list[str] = ()) -> list[Cell]:
    """Every cell's recipe, validated before anything runs: a bad key or value names its --grid."""
    if not 1 <= len(grids) <= 2:
        raise AutolrError(f"a sweep takes one or two --grid options, got {len(grids)}")
    if len({g.key for g in grids}) < len(grids):
        raise AutolrError(f"--grid {grids[0].key} is given twice: give each key once, with all its values")
    for g in grids:
        if len(set(g.values)) < len(g.values):
            raise AutolrError(f"--grid {g.key}={','.join(g.values)} repeats a value: give each value once")
    load_recipe(recipe, list(overrides))  # a mistake in the recipe or --set is named as such
    cells = []
    for combo in itertools.product(*(g.values for g in grids)):
        values = dict(zip((g.key for g in grids), combo, strict=True))
        sets = [f"{k}={v}" for k, v in values.items()]
        try:
            cell_recipe = load_recipe(recipe, [*overrides, *sets])
        except AutolrError as e:
            raise AutolrError(f"--grid {' '.join(sets)}: {e}") from None
        if cell_recipe.prune.mode != "fixed":  # a cell is one training at a fixed depth
            raise AutolrError(
                f"--grid {' '.join(sets)}: prune.mode = {cell_recipe.prune.mode!r}, but a sweep's cells are single"
                " trainings scored on the validation split; sweep with prune.mode = 'fixed' (set model.drop_top)"
            )
        name = "cell-" + "_".join(f"{k}={_slug(v)}" for k, v in values.items())
        cells.append(Cell(name, values, cell_recipe))
    return cells


def _slug(value: str) -> str:
    """A value as a folder-name part: `[3, 4]` -> `3+4`, `'cosine'` -> `cosine`."""
    return re.sub(r"[^\w.+-]", "", re.sub(r",\s*", "+", value)) or "empty"


def sweep_folder(recipe: Recipe, output: str | Path | None, resume: bool) -> Path:
    """`--output`, a new `output.dir/<name>-sweep-<timestamp>`, or with --resume the newest such sweep."""
    return grid_folder(recipe, output, resume, "sweep", "finished cells", _say)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _say(text: str) -> None:
    """Progress on stderr, from the main process."""
    if is_main_process():
        say(text)


def _make_folder(recipe: Recipe, output: str | Path | None, resume: bool) -> Path:
    folder = sweep_folder(recipe, output, resume)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_cell(cell: Cell, folder: Path) -> None:
    """Run one cell as a selection run, unless its folder already holds the finished score."""
    out = folder / cell.name
    saved, started = main_reads(launcher_state(), lambda: (_read_json(out / "metrics.json"), out.is_dir()))
    if saved is not None:
        cell.metrics = saved
    else:
        try:  # --resume only for a cell that started before: a fresh cell's log says nothing of resuming
            cell.metrics = run(cell.recipe, output=out, resume=started, selection=True).metrics
        except Diverged as e:  # one diverging cell (an LR too high) must not end the sweep
            cell.metrics, cell.error = {}, str(e)
            _say(f"{cell.name} diverged: {e}")
    cell.ramp = main_reads(launcher_state(), lambda: ramp_status(out / "log.jsonl", cell.recipe))


def ramp_status(log_file: Path, recipe: Recipe) -> str:
    """Whether the first trial's weight variations allow an ascending first-epoch ramp."""
    first = next((r for r in fileio.read_jsonl(log_file)
                  if r.get("kind") == "trial" and r.get("epoch") == 1 and r.get("trial") == 1), None)
    if recipe.train.schedule != "autolr" or first is None or not first.get("v"):
        return "-"
    v, a = first["v"], recipe.autolr
    return "non-ascending" if a.beta * max(v) <= a.alpha * min(v) else "ascending"


def score_key(metric: str, cells: list[Cell]) -> str:
    """`auto`: recall@1 (retrieval), or accuracy (classification runs)."""
    scored = [c.metrics for c in cells if c.metrics]
    if metric == "auto":
        metric = "recall@1" if not scored or "recall@1" in scored[0] else "accuracy"
    if scored and metric not in scored[0]:
        keys = [k for k, v in scored[0].items() if isinstance(v, (int, float)) and k not in ("epochs", "drop_top", "wall_time")]
        raise AutolrError(f"--metric {metric!r} is not in the cells' metrics: choose one of {', '.join(keys)}")
    return metric


def run_sweep(
    recipe: str | Path, grids: list[Grid], *, overrides: list[str] = (), output: str | Path | None = None,
    resume: bool = False, final: bool = False, metric: str = "auto",
) -> SweepResult:
    """Run (or resume) every cell, choose the best on the validation split, write the tables and heatmap;
    with `final`, train the chosen cell on all training classes and report its test metrics."""
    cells = make_cells(recipe, grids, overrides)
    folder = main_reads(launcher_state(), lambda: _make_folder(cells[0].recipe, output, resume))
    for i, cell in enumerate(cells, 1):
        _say(f"sweep cell {i}/{len(cells)}: {' '.join(f'{k}={v}' for k, v in cell.values.items())}")
        run_cell(cell, folder)
    key = score_key(metric, cells)
    scored = [c for c in cells if c.metrics]
    chosen = max(scored, key=lambda c: c.metrics[key]) if scored else None  # ties: the first in grid order
    result = SweepResult(folder, key, cells, chosen)
    write_outputs(result, grids)
    if final and chosen is not None:
        started = main_reads(launcher_state(), (folder / "final").is_dir)
        result.final = run(chosen.recipe, output=folder / "final", resume=started).metrics
        write_outputs(result, grids)
    return result


def rows(result: SweepResult) -> list[dict[str, Any]]:
    """One row per cell: its grid values, validation score(s), ramp and whether it was chosen."""
    out = []
    for c in result.cells:
        m = c.metrics or {}
        out.append({
            **c.values, result.metric: m.get(result.metric), "map@r": m.get("map@r"), "split": m.get("split", ""),
            "ramp": c.ramp, "status": "diverged" if c.error else "ok", "chosen": c is result.chosen, "cell": c.name,
        })
    return out


def write_outputs(result: SweepResult, grids: list[Grid]) -> None:
    """sweep.json, sweep.csv, sweep.md and (two grids) heatmap.png, each written atomically (by the main
    process)."""
    if not is_main_process():
        return
    table = rows(result)
    fileio.write_json(result.folder / "sweep.json", {
        "grids": {g.key: g.values for g in grids}, "metric": result.metric, "cells": table,
        "chosen": result.chosen.name if result.chosen else None,
        "chosen_values": result.chosen.values if result.chosen else None, "final": result.final,
    })
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    fileio.write_text(result.folder / "sweep.csv", buffer.getvalue())
    fileio.write_text(result.folder / "sweep.md", markdown(result, table))
    if len(grids) == 2:
        heatmap(result, grids, result.folder / "heatmap.png")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def markdown(result: SweepResult, table: list[dict[str, Any]]) -> str:
    keys = list(result.cells[0].values)
    split = next((r["split"] for r in table if r["split"]), "val")
    head = [*keys, f"{split} {result.metric}", f"{split} map@r", "first-epoch ramp", "chosen"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in table:
        score = "diverged" if r["status"] == "diverged" else _pct(r[result.metric])
        lines.append("| " + " | ".join([*(r[k] for k in keys), score, _pct(r["map@r"]), r["ramp"], "**yes**" if r["chosen"] else ""]) + " |")
    text = "\n".join(lines) + "\n"
    if result.chosen:
        text += f"\nChosen on the {split} split: `{result.chosen.name}` ({result.metric} {_pct(result.chosen.metrics[result.metric])}).\n"
    if any(c.ramp == "non-ascending" for c in result.cells):
        text += "\nnon-ascending: beta * max(v) <= alpha * min(v) in the first trial, so the first epoch used the repair rule.\n"
    if result.final:
        scores = ", ".join(f"{k} {_pct(v)}" for k, v in result.final.items() if k.startswith(("recall@", "map@", "accuracy")))
        text += f"\nFinal run of the chosen cell (all training classes, `final/`), test split: {scores}.\n"
    return text


def heatmap(result: SweepResult, grids: list[Grid], path: Path) -> list[str]:
    """The paper's Fig. 3: the first grid across, the second down, the score in each cell (%); hatched
    cells had a non-ascending first-epoch ramp, the chosen cell is outlined; a legend says both.
    Returns the legend's labels."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    xs, ys = grids[0].values, grids[1].values
    scores = np.full((len(ys), len(xs)), np.nan)
    fig = Figure(figsize=(1.1 * len(xs) + 2.5, 0.8 * len(ys) + 1.8))  # no pyplot: leaves a user's backend alone
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for c in result.cells:
        if c.metrics:
            scores[ys.index(c.values[grids[1].key]), xs.index(c.values[grids[0].key])] = 100 * c.metrics[result.metric]
    image = ax.imshow(scores, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label=f"{result.metric} (%)")
    for c in result.cells:
        i, j = ys.index(c.values[grids[1].key]), xs.index(c.values[grids[0].key])
        text = "diverged" if c.error else _pct((c.metrics or {}).get(result.metric))
        if c.ramp == "non-ascending":
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", edgecolor="white", linewidth=0))
        if c is result.chosen:
            ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="red", linewidth=2.5))
        ax.text(j, i, text, ha="center", va="center", color="black", fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1.5})
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(grids[0].key)
    ax.set_ylabel(grids[1].key)
    split = next((c.metrics.get("split") for c in result.cells if c.metrics), "val") or "val"
    hatched = any(c.ramp == "non-ascending" for c in result.cells)
    ax.set_title(f"{split} {result.metric}", fontsize=9)
    handles = [Patch(fill=False, edgecolor="red", linewidth=2.5, label=f"chosen: best {split} {result.metric}")] if result.chosen else []
    if hatched:
        handles.append(Patch(facecolor="white", hatch="xx", edgecolor="grey", label="first-epoch ramp not ascending (repair rule)"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(handles), fontsize=8, frameon=False)
    fileio.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    return [h.get_label() for h in handles]


def print_sweep(result: SweepResult) -> None:
    if not is_main_process():
        return
    from rich.console import Console
    from rich.table import Table

    keys = list(result.cells[0].values)
    split = next((c.metrics["split"] for c in result.cells if c.metrics and "split" in c.metrics), "val")
    table = Table(*keys, f"{split} {result.metric}", f"{split} map@r", "ramp", "", title=f"sweep: {result.folder}")
    for column in table.columns[len(keys):len(keys) + 2]:
        column.justify = "right"
    for r in rows(result):
        score = "diverged" if r["status"] == "diverged" else _pct(r[result.metric])
        table.add_row(*(r[k] for k in keys), score, _pct(r["map@r"]), r["ramp"], "chosen" if r["chosen"] else "")
    console = Console()
    console.print(table)
    if result.chosen:
        console.print(f"chosen: {result.chosen.name} ({' '.join(f'{k}={v}' for k, v in result.chosen.values.items())})")
    if result.final:
        console.print(f"final (test split): {result.metric} {_pct(result.final.get(result.metric))}, in {result.folder / 'final'}")
