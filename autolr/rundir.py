"""The run folder: resolved recipe, per-epoch log, checkpoints, metrics and the exported model.

Every file is written atomically (temporary file, then rename), so a run killed at any moment leaves
either the old or the new version of each file, and `--resume` never loads a half-written checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolr import _io
from autolr.errors import AutolrError
from autolr.recipe import Recipe

if TYPE_CHECKING:
    from autolr.engine import Trainer

log = logging.getLogger("autolr")


class RunDir:
    def __init__(self, path: Path, recipe: Recipe):
        self.path, self.recipe = path, recipe
        self.checkpoints = path / "checkpoints"
        self._started = time.time()
        self._previous_wall_time = 0.0

    @classmethod
    def open(
        cls, recipe: Recipe, *, output: str | Path | None, resume: bool, overwrite: bool, main: bool = True
    ) -> RunDir:
        """Pick the folder (`--output`, the newest run of this recipe for `--resume`, or a new one)."""
        if resume and overwrite:
            raise AutolrError("--resume and --overwrite contradict each other: pick one")
        path = Path(output) if output else default_path(recipe, resume)
        if resume:
            check_resumable(recipe, path)
        rundir = cls(path, recipe)
        if main:
            _prepare_folder(path, resume=resume, overwrite=overwrite)
            if not (resume and rundir.finished()):  # a finished run keeps the recipe it ran with
                _io.write_text(path / "recipe.toml", recipe.to_toml())
        return rundir

    def has_progress(self) -> bool:
        """Anything worth keeping: a checkpoint, a log line or metrics."""
        return any((self.path / f).exists() for f in ("log.jsonl", "metrics.json", "checkpoints", "prune"))

    def remove(self) -> None:
        """Delete the folder this run created (only what autolr writes there)."""
        for name in ("recipe.toml", "run.log"):
            (self.path / name).unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    # -- metrics and logs ------------------------------------------------------------------------
    def finished(self) -> bool:
        """metrics.json and the model; a selection run (scored on the validation split) has no model."""
        if not (self.path / "metrics.json").is_file():
            return False
        return (self.path / "model.safetensors").is_file() or self.read_metrics().get("split") == "val"

    def read_metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        _io.write_json(self.path / "metrics.json", metrics)

    def initial_metrics(self) -> dict[str, Any] | None:
        f = self.checkpoints / "initial.json"
        return json.loads(f.read_text()) if f.is_file() else None

    def save_initial_metrics(self, metrics: dict[str, Any]) -> None:
        _io.write_json(self.checkpoints / "initial.json", metrics)

    def log(self, row: dict[str, Any]) -> None:
        _io.append_jsonl(self.path / "log.jsonl", row)

    def wall_time(self) -> float:
        """Seconds of this run so far, across resumes."""
        return self._previous_wall_time + time.time() - self._started

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, trainer: Trainer, keep: int) -> None:
        """`checkpoints/epoch-NNNN.pt`: model, optimizer (with every group's LRs), RNG, loop state."""
        import torch

        state = {
            "epoch": trainer.epoch,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "extra": trainer.extra,
            "scaler": trainer.accelerator.scaler.state_dict() if trainer.accelerator.scaler is not None else None,
            "wall_time": self.wall_time(),
        }
        path = self.checkpoints / f"epoch-{trainer.epoch:04d}.pt"
        _io.atomic_write(path, lambda p: torch.save(state, p))
        for old in sorted(self.checkpoints.glob("epoch-*.pt"))[:-keep]:
            old.unlink(missing_ok=True)

    def drop_checkpoints(self) -> None:
        """Delete the epoch checkpoints (a finished selection run keeps only its score and log)."""
        for f in self.checkpoints.glob("epoch-*.pt"):
            f.unlink(missing_ok=True)

    def restore_checkpoint(self, trainer: Trainer) -> None:
        """Load the newest readable checkpoint, if any, and cut `log.jsonl` back to its epoch."""
        import torch

        for path in sorted(self.checkpoints.glob("epoch-*.pt"), reverse=True):
            try:
                state = torch.load(path, map_location=trainer.accelerator.device, weights_only=True)
            except Exception as e:  # an unreadable file cannot be a finished checkpoint: skip it
                log.warning("skipping unreadable checkpoint %s (%s)", path.name, e)
                continue
            trainer.model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"].cpu())
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
            trainer.extra.update(state["extra"])
            if state.get("scaler") and trainer.accelerator.scaler is not None:
                trainer.accelerator.scaler.load_state_dict(state["scaler"])
            trainer.epoch = state["epoch"]
            self._previous_wall_time = state["wall_time"]
            if trainer.is_main:
                self._truncate_log(trainer.epoch)
            log.info("resumed from %s (epoch %d done)", path.name, trainer.epoch)
            return

    def _truncate_log(self, epoch: int) -> None:
        rows = [r for r in _io.read_jsonl(self.path / "log.jsonl") if r.get("epoch", 0) <= epoch]
        _io.write_text(self.path / "log.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


# What a resumed run must share with the run it continues: these shape the network, the data or the
# search, so a checkpoint of one cannot continue the other. Other keys (train.epochs, LRs and their
# bounds, workers, eval and output settings) may change on --resume: that is how a run is extended, or
# continued at a lower LR after the loss diverged.
FIXED_ON_RESUME = ("model", "prune", "data.name", "data.root", "data.hub_id", "data.image_size", "data.transform",
                   "data.val_fraction", "data.samples_per_class", "train.schedule", "train.seed")


def check_resumable(recipe: Recipe, path: Path) -> None:
    """--resume with a recipe whose network, data or search differ from the run's is an error naming them."""
    saved_file = path / "recipe.toml"
    if not saved_file.is_file():
        return
    from autolr.recipe import load_recipe

    saved = _flat(load_recipe(saved_file).model_dump())
    given = _flat(recipe.model_dump())
    differ = [k for k in given if k.startswith(FIXED_ON_RESUME) and k in saved and saved[k] != given[k]]
    if differ:
        shown = "; ".join(f"{k} = {given[k]!r} here, {saved[k]!r} in the run" for k in differ[:4])
        more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
        raise AutolrError(
            f"--resume: this recipe differs from the run's in {shown}{more}. Resume with the run's own"
            f" recipe: autolr run {saved_file} --resume --output {path}"
        )


def _flat(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


def default_path(recipe: Recipe, resume: bool) -> Path:
    """`output.dir/<name>-<timestamp>`, or for `--resume` the newest such folder."""
    root = Path(recipe.output.dir)
    name = recipe.output.name or "run"
    if not resume:
        return root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = sorted(p for p in root.glob(f"{name}-*") if p.is_dir() and (p / "recipe.toml").is_file())
    if not runs:
        raise AutolrError(f"--resume: no run of {name!r} under {root}/ to resume; pass --output RUN_DIR")
    log.info("resuming the newest run of %r: %s", name, runs[-1])
    return runs[-1]


def _prepare_folder(path: Path, *, resume: bool, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise AutolrError(f"--output {path} is a file, not a folder")
    busy = path.is_dir() and any(path.iterdir())
    if resume and busy and not (path / "recipe.toml").is_file():
        raise AutolrError(f"--resume: {path} holds no autolr run (no recipe.toml)")
    if resume and not busy:
        log.info("--resume: nothing to resume in %s yet; starting the run", path)
    if busy and not (resume or overwrite):
        raise AutolrError(f"{path} is not empty: add --resume to continue that run or --overwrite to replace it")
    if busy and overwrite:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)

