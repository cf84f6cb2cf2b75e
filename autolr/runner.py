"""`autolr.run`: one command's run. Checks the recipe, makes the Accelerator, opens (or resumes) the run
folder and hands it to the mode the recipe names (`autolr.modes`): fine-tuning at a fixed depth,
a depth search (Algorithm 1) before it, or iterative pruning (SILO).

`run(recipe)` is the whole product; the CLI only parses arguments and calls it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolr.console import setup_logging
from autolr.errors import AutolrError
from autolr.modes.depth_search import search_depth
from autolr.modes.finetune import finetune
from autolr.modes.iterative import run_iterative
from autolr.preflight import check
from autolr.recipe import Recipe, load_recipe
from autolr.rundir import RunDir, default_path, main_reads, remove_if_unstarted
from autolr.train.accel import close_trackers, make_accelerator

log = logging.getLogger("autolr")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def run(
    recipe: Recipe | str | Path,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    selection: bool = False,
) -> RunResult:
    """Fine-tune, evaluate and save as the recipe says; returns the run folder and its metrics.

    `selection=True` trains on the training classes minus the validation split and scores that split
    (metrics carry `"split": "val"`); such a run exports no model. Sweeps and searches are made of these.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if selection and recipe.prune.mode != "fixed":
        raise AutolrError(f"a selection run is one training at a fixed depth; prune.mode = {recipe.prune.mode!r}"
                          " cannot run as one: set prune.mode = 'fixed' (and model.drop_top)")
    check(recipe)  # the checks `autolr validate` runs, before any folder exists
    accelerator, precision_note = make_accelerator(recipe)
    setup_logging(None, accelerator.is_main_process)  # console now; run.log once the folder exists
    rundir, state = _open_run(recipe, accelerator, output, resume, overwrite)
    setup_logging(rundir.path, accelerator.is_main_process)
    log.info("run folder: %s", rundir.path)
    log.info("precision: %s", precision_note)
    if state == "finished":
        log.info("this run already finished; nothing to resume")
        return RunResult(rundir.path, main_reads(accelerator, rundir.read_metrics))
    if state == "extend":
        log.info("--resume: extending the finished run to train.epochs = %d", recipe.train.epochs)
    try:
        metrics = _run_mode(recipe, accelerator, rundir, selection)
    except KeyboardInterrupt:
        log.warning("interrupted: %s keeps every finished epoch (and search candidate); continue with"
                    " autolr run %s --resume --output %s", rundir.path, rundir.path / "recipe.toml", rundir.path)
        raise
    except BaseException:
        remove_if_unstarted(accelerator, rundir)  # whatever failed before the first epoch leaves no folder
        raise
    finally:
        close_trackers(accelerator)  # also when the loss diverged; the process group stays (see _end_at_exit)
    return RunResult(rundir.path, metrics)


def _run_mode(recipe: Recipe, accelerator, rundir: RunDir, selection: bool) -> dict[str, Any]:
    """The recipe's mode: iterative pruning, or fine-tuning at a fixed depth (a searched one for
    prune.mode = "search": Algorithm 1 picks drop_top first)."""
    if recipe.prune.mode == "iterative":
        return run_iterative(recipe, accelerator, rundir)
    prune_metrics: dict[str, Any] = {}
    if recipe.prune.mode == "search":
        recipe, prune_metrics = search_depth(recipe, accelerator, rundir)
    return finetune(recipe, accelerator, rundir, selection=selection, extra_metrics=prune_metrics)


def _open_run(recipe: Recipe, accelerator, output, resume: bool, overwrite: bool) -> tuple[RunDir, str]:
    """The run folder, opened by the main process alone, and its state ("new", "resume", "extend" or
    "finished"), which every rank receives: no other rank reads the folder (it may be on another node)."""
    def open_on_main() -> tuple[str, str]:
        path = Path(output) if output is not None else default_path(recipe, resume)
        rundir = RunDir.open(recipe, output=path, resume=resume, overwrite=overwrite)
        return str(path), rundir.resume_state(recipe) if resume else "new"

    path, state = main_reads(accelerator, open_on_main)
    _end_at_exit(accelerator)
    return RunDir(Path(path), recipe), state


_ENDING: list[bool] = []  # set once the process group's end is registered


def _end_at_exit(accelerator) -> None:
    """The process group lives for the whole command and is destroyed once, as the process exits."""
    if accelerator.num_processes > 1 and not _ENDING:
        import atexit

        _ENDING.append(True)
        from accelerate import PartialState

        atexit.register(lambda: PartialState().destroy_process_group())
