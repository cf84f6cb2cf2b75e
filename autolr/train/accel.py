"""accelerate, as a run uses it: the Accelerator (precision), experiment trackers, the global batch
split over processes, and the two collectives the loop needs (broadcast rank 0's values; gather rows
back into dataset order)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from autolr.errors import AutolrError
from autolr.recipe import Recipe


def make_accelerator(recipe: Recipe):
    """Precision: "auto" defers to `accelerate launch`; an explicit recipe value wins, and says so."""
    from accelerate import Accelerator

    kwargs: dict[str, Any] = {}  # gradient accumulation is done by hand: see train_one_epoch
    precision = recipe.train.precision
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if precision != "auto":
        kwargs["mixed_precision"] = precision
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs["cpu"] = True  # several processes and no GPU: DDP on CPU over gloo
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps one process-wide state: without a reset, a second `autolr.run` in the same
    # process could not pick another precision (the process group itself, in PartialState, stays)
    AcceleratorState._reset_state()
    GradientState._reset_state()
    try:
        accelerator = Accelerator(**kwargs)
    except (ValueError, RuntimeError) as e:
        raise AutolrError(f"train.precision = {precision!r} cannot run here ({e}); try 'bf16' or 'no'") from None
    chosen = str(accelerator.mixed_precision)
    if precision == "auto":
        note = f"{chosen} (train.precision = 'auto': " + (f"the launcher's {launcher!r})" if launcher else "the default)")
    elif launcher and launcher != precision:
        note = f"{chosen} (train.precision = {precision!r} in the recipe wins over the launcher's {launcher!r})"
    else:
        note = f"{chosen} (train.precision in the recipe)"
    return accelerator, note


def start_trackers(accelerator, recipe: Recipe, run_dir: Path) -> None:
    """accelerate's experiment trackers (output.log_with), logging into the run folder."""
    from accelerate.tracking import filter_trackers

    accelerator.project_configuration.set_directories(str(run_dir))
    try:
        trackers = filter_trackers(recipe.output.log_with, accelerator.logging_dir)
    except ValueError as e:
        raise AutolrError(f"output.log_with = {recipe.output.log_with}: {e}") from None
    found = {str(getattr(t, "value", t)) for t in trackers}
    missing = [name for name in recipe.output.log_with if name != "all" and name not in found]
    if missing:
        raise AutolrError(
            f"output.log_with names {', '.join(missing)}, which is not installed: pip install {' '.join(missing)}"
            " (or remove it from output.log_with)"
        )
    accelerator.log_with = trackers
    if accelerator.is_main_process:
        flat = {f"{section}.{key}": value if not isinstance(value, list) else str(value)
                for section, values in recipe.model_dump().items() for key, value in values.items()}
        accelerator.init_trackers(run_dir.name, config=flat)


def close_trackers(accelerator) -> None:
    """What `end_training` does for one run, less destroying the process group: a sweep or search runs
    many trainings in one command, and accelerate 1.15 cannot bring a destroyed group back."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def per_process_batch(batch_size: int, processes: int, samples_per_class: int = 0) -> int:
    """`data.batch_size` is the global batch (the paper's 40), split evenly over the processes, so that
    an epoch has as many optimizer steps, and AutoLR measures the same weight variation, on any number
    of GPUs. Class-balanced batches must also split into whole groups of `samples_per_class`."""
    step = processes * max(samples_per_class, 1)
    if processes == 1 or batch_size % step == 0:  # one process: the sampler checks samples_per_class
        return batch_size // processes
    below, above = batch_size // step * step, (batch_size // step + 1) * step
    unit = f"{processes} processes" + (f" x data.samples_per_class = {samples_per_class}" if samples_per_class else "")
    nearest = f"{below} or {above}" if below else f"{above}"
    raise AutolrError(f"data.batch_size = {batch_size} is the global batch and must divide by {unit}:"
                      f" use {nearest}")


def broadcast_from_main(accelerator, values: list[float]) -> list[float]:
    """Rank 0's values on every rank (so that every rank decides alike)."""
    if accelerator.num_processes == 1:
        return values
    from accelerate.utils import broadcast

    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return broadcast(t, from_process=0).tolist()


def gather_in_order(acc, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Rank r embedded items r, r + W, r + 2W, ... (padded by wrapping): gather and restore dataset order."""
    if acc.num_processes == 1:
        return rows
    gathered = acc.gather(rows.contiguous())  # [W * per, ...], rank-major
    per = rows.shape[0]
    return gathered.view(acc.num_processes, per, *rows.shape[1:]).transpose(0, 1).reshape(-1, *rows.shape[1:])[:n]
