"""The run folder: resolved recipe, per-epoch log, checkpoints, metrics and the exported model.

Every file is written atomically (temporary file, then rename), so a run killed at any moment leaves
either the old or the new version of each file, and `--resume` never loads a half-written checkpoint.
Under several processes only the main process reads or writes the folder (`main_reads` shares what it
found, `load_shared` a checkpoint), so a run on several nodes needs no shared file system.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from autolr import fileio
from autolr.errors import AutolrError
from autolr.recipe import Recipe

log = logging.getLogger("autolr")
T = TypeVar("T")


def launcher_state():
    """accelerate's process state under a launcher (several processes), else None: what `main_reads`
    needs outside a run (a sweep or study folder), where no Accelerator exists yet."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """True on the one process that reads and writes the folders (always, without a launcher)."""
    state = launcher_state()
    return state is None or state.is_main_process


def main_reads(accelerator, read: Callable[[], T]) -> T:
    """`read()` on the main process, its result on every rank (a user error too, raised everywhere).

    Only the main process touches the run folder: on several nodes without a shared file system the
    other ranks cannot see it, and even with one they must not decide differently from a racing view.
    """
    if accelerator is None or accelerator.num_processes == 1:
        return read()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if accelerator.is_main_process:
        try:
            box = [("ok", read())]
        except AutolrError as e:
            box = [("error", str(e))]
        except BaseException as e:  # the others must not wait forever for an answer that never comes
            box = [("crash", f"{type(e).__name__}: {e}")]
            broadcast_object_list(box)
            raise
    kind, value = broadcast_object_list(box)[0]
    if kind == "error":
        raise AutolrError(value)
    if kind == "crash":
        raise RuntimeError(f"the main process failed: {value}")
    return value


def remove_if_unstarted(accelerator, rundir: RunDir) -> None:
    """Whatever failed before the first epoch leaves no folder behind (the main process removes it)."""
    if accelerator.is_main_process and not rundir.has_progress():
        rundir.remove()


def load_shared(accelerator, path: Path, on_main: dict[str, Any] | None = None) -> dict[str, Any]:
    """A file the main process wrote, loaded on every rank: from the file wherever a rank sees it (same
    size), else sent by the main process (several nodes without a shared file system). `on_main`: the
    main process's copy, when it has one loaded already."""
    import torch

    def load() -> dict[str, Any]:
        return on_main if on_main is not None else torch.load(path, map_location="cpu", weights_only=True)

    if accelerator.num_processes == 1:
        return load()
    from accelerate.utils import broadcast_object_list, gather_object

    size = main_reads(accelerator, lambda: path.stat().st_size)
    mine = path.stat().st_size if path.is_file() else None
    blind = [rank for rank, seen in enumerate(gather_object([mine])) if seen != size]
    if not blind:
        return load()
    log.info("process(es) %s cannot see %s (no shared file system): the main process sends it",
             ", ".join(map(str, blind)), path)
    return broadcast_object_list([load() if accelerator.is_main_process else None])[0]


class RunDir:
    def __init__(self, path: Path, recipe: Recipe):
        self.path, self.recipe = path, recipe
        self.checkpoints = path / "checkpoints"
        self._started = time.time()
        self._previous_wall_time = 0.0
        self._loaded: dict[str, Any] | None = None  # the checkpoint the main process found readable

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
            if not (resume and rundir.resume_state(recipe) == "finished"):  # it keeps the recipe it ran with
                fileio.write_text(path / "recipe.toml", recipe.to_toml())
        return rundir

    def resume_state(self, recipe: Recipe) -> str:
        """For --resume: "new" (nothing here yet), "resume", "extend" (finished, but `recipe` asks for more
        epochs) or "finished"."""
        if not self.has_progress():
            return "new"
        if not self.finished():
            return "resume"
        done = self.read_metrics().get("epochs", 0)
        if recipe.train.epochs <= done:
            return "finished"
        self._check_extendable(recipe, done)
        return "extend"

    def _check_extendable(self, recipe: Recipe, done: int) -> None:
        last = self.checkpoints / f"epoch-{done:04d}.pt"
        if recipe.prune.mode == "iterative":
            raise AutolrError(f"--resume: {self.path} is a finished iterative-pruning run; its cycles cannot be"
                              f" extended to train.epochs = {recipe.train.epochs}: start a new run")
        if not last.is_file():
            why = ("a selection run keeps no checkpoints" if self.read_metrics().get("split") == "val"
                   else f"its final checkpoint {last.name} is gone")
            raise AutolrError(f"--resume: {self.path} finished at epoch {done} and cannot be extended to"
                              f" train.epochs = {recipe.train.epochs}: {why}. Start a new run")

    def has_progress(self) -> bool:
        """Anything worth keeping: an epoch checkpoint, a log line, metrics or search candidates (the
        initial scores alone are not: they are measured before the first epoch)."""
        if any((self.path / f).exists() for f in ("log.jsonl", "metrics.json", "prune")):
            return True
        return self.checkpoints.is_dir() and any(f.name != "initial.json" for f in self.checkpoints.iterdir())

    def remove(self) -> None:
        """Delete the folder this run created (only what autolr writes there)."""
        for f in (self.path / "recipe.toml", self.path / "run.log", self.checkpoints / "initial.json"):
            f.unlink(missing_ok=True)
        for folder in (self.checkpoints, self.path):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    # -- metrics and logs ------------------------------------------------------------------------
    def finished(self) -> bool:
        """metrics.json and the model; a selection run (scored on the validation split) has no model."""
        if not (self.path / "metrics.json").is_file():
            return False
        return (self.path / "model.safetensors").is_file() or self.read_metrics().get("split") == "val"

    def read_metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        fileio.write_json(self.path / "metrics.json", metrics)

    def initial_metrics(self) -> dict[str, Any] | None:
        f = self.checkpoints / "initial.json"
        return json.loads(f.read_text()) if f.is_file() else None

    def save_initial_metrics(self, metrics: dict[str, Any]) -> None:
        fileio.write_json(self.checkpoints / "initial.json", metrics)

    def log(self, row: dict[str, Any]) -> None:
        fileio.append_jsonl(self.path / "log.jsonl", row)

    def wall_time(self) -> float:
        """Seconds of this run so far, across resumes."""
        return self._previous_wall_time + time.time() - self._started

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], keep: int) -> None:
        """`checkpoints/epoch-NNNN.pt` from a trainer's `checkpoint_state` (its "epoch" names the file),
        with this run's wall time so far; keeps the newest `keep`."""
        import torch

        state = {**state, "wall_time": self.wall_time()}
        path = self.checkpoints / f"epoch-{state['epoch']:04d}.pt"
        fileio.atomic_write(path, lambda p: torch.save(state, p))
        for old in sorted(self.checkpoints.glob("epoch-*.pt"))[:-keep]:
            old.unlink(missing_ok=True)

    def drop_checkpoints(self) -> None:
        """Delete the epoch checkpoints (a finished selection run keeps only its score and log)."""
        for f in self.checkpoints.glob("epoch-*.pt"):
            f.unlink(missing_ok=True)

    def load_checkpoint(self, accelerator) -> dict[str, Any] | None:
        """The newest readable checkpoint's contents (None: there is none), with `log.jsonl` cut back to
        its epoch and the wall time carried on.

        The main process picks the file; every other rank loads that same file, or receives it from the
        main process where it cannot see it (several nodes without a shared file system)."""
        name = main_reads(accelerator, self._newest_checkpoint)
        if name is None:
            return None
        path = self.checkpoints / name
        state = load_shared(accelerator, path, self._loaded if accelerator.is_main_process else None)
        self._loaded = None
        self._previous_wall_time = state["wall_time"]
        if accelerator.is_main_process:
            self._truncate_log(state["epoch"])
        log.info("resumed from %s (epoch %d done)", path.name, state["epoch"])
        return state

    def _newest_checkpoint(self) -> str | None:
        import torch

        for path in sorted(self.checkpoints.glob("epoch-*.pt"), reverse=True):
            try:
                self._loaded = torch.load(path, map_location="cpu", weights_only=True)
                return path.name
            except Exception as e:  # an unreadable file cannot be a finished checkpoint: skip it
                log.warning("skipping unreadable checkpoint %s (%s)", path.name, e)
        return None

    def _truncate_log(self, epoch: int) -> None:
        rows = [r for r in fileio.read_jsonl(self.path / "log.jsonl") if r.get("epoch", 0) <= epoch]
        fileio.write_text(self.path / "log.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


# What a resumed run must share with the run it continues: these shape the network, the data or the
# search, so a checkpoint of one cannot continue the other. Other keys (train.epochs, LRs and their
# bounds, workers, eval and output settings) may change on --resume: that is how a run is extended, or
# continued at a lower LR after the loss diverged.
FIXED_ON_RESUME = ("model.", "prune.", "data.name", "data.root", "data.hub_id", "data.image_size", "data.transform",
                   "data.val_fraction", "data.samples_per_class", "train.schedule", "train.seed",
                   # an optimizer's state and groups, and a loss's proxies, fit only their own kind
                   "train.optimizer", "train.weight_decay_1d", "train.loss")
FREE_ON_RESUME = ("model.compile", "model.channels_last")  # speed only: the weights are the same


def check_resumable(recipe: Recipe, path: Path) -> None:
    """--resume with a recipe whose network, data or search differ from the run's is an error naming them."""
    saved_file = path / "recipe.toml"
    if not saved_file.is_file():
        return
    from autolr.recipe import load_recipe

    saved = flat(load_recipe(saved_file).model_dump())
    given = flat(recipe.model_dump())
    differ = [k for k in given if k.startswith(FIXED_ON_RESUME) and k not in FREE_ON_RESUME and k in saved and saved[k] != given[k]]
    if differ:
        shown = "; ".join(f"{k} = {given[k]!r} here, {saved[k]!r} in the run" for k in differ[:4])
        more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
        raise AutolrError(
            f"--resume: this recipe differs from the run's in {shown}{more}. Resume with the run's own"
            f" recipe: autolr run {saved_file} --resume --output {path}"
        )


def flat(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A recipe's `model_dump()` as dotted keys: {"train.lr": 0.01, ...}."""
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


def grid_folder(recipe: Recipe, output: str | Path | None, resume: bool, kind: str, kept: str,
                say: Callable[[str], None]) -> Path:
    """The folder of a sweep or study (`kind`): `--output`, a new `output.dir/<name>-<kind>-<timestamp>`,
    or with --resume the newest such folder. `kept` says what a resume keeps ("finished cells")."""
    if output is None and resume:
        root = Path(recipe.output.dir)
        found = sorted(p for p in root.glob(f"{recipe.output.name}-{kind}-*") if p.is_dir())
        if not found:
            raise AutolrError(f"--resume: no {kind} of {recipe.output.name!r} under {root}/; pass --output DIR")
        say(f"resuming the newest {kind} of {recipe.output.name!r}: {found[-1]}")
        return found[-1]
    folder = Path(output) if output else Path(recipe.output.dir) / f"{recipe.output.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and not folder.is_dir():
        raise AutolrError(f"--output {folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not resume:
        raise AutolrError(f"{folder} is not empty: add --resume to continue that {kind} ({kept} are kept)")
    return folder

