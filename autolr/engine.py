"""The training run, linear and readable: setup -> (train one epoch -> evaluate -> save)* -> report.

`run(recipe)` is the whole product; the CLI only parses arguments and calls it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from autolr.errors import AutolrError
from autolr.recipe import Recipe
from autolr.rundir import RunDir, default_path, main_reads

log = logging.getLogger("autolr")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


class Diverged(AutolrError):
    """The loss became NaN or inf."""


@dataclass
class Trainer:
    """Everything one run holds; built by `setup`, advanced by `train_one_epoch`."""

    recipe: Recipe
    accelerator: Any
    net: Any  # the prepared (maybe DDP-wrapped) RetrievalNet
    optimizer: Any
    train_loader: Any
    eval_loaders: dict[str, Any]
    recall_at: list[int]
    rundir: RunDir
    epoch: int = 0  # epochs completed
    extra: dict[str, Any] = field(default_factory=dict)  # saved in checkpoints: must stay picklable data
    task: str = "retrieval"  # or "classification" (accuracy on the test split's own classes)
    selection: bool = False  # trained on the training classes minus the validation split, scored on it
    # (epoch, step, steps_per_epoch) -> LR factor; None: train.schedule's (iterative pruning sets its own)
    lr_fn: Callable[[int, int, int], float] | None = None
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = F.cross_entropy  # (net output, labels) -> loss
    total_epochs: int = 0  # what progress counts to; 0: train.epochs (iterative pruning: all cycles')

    @property
    def model(self):
        """The bare RetrievalNet (no DDP or compile wrapper)."""
        return self.accelerator.unwrap_model(self.net, keep_torch_compile=False)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


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
    from autolr.recipe import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if selection and recipe.prune.mode != "fixed":
        raise AutolrError(f"a selection run is one training at a fixed depth; prune.mode = {recipe.prune.mode!r}"
                          " cannot run as one: set prune.mode = 'fixed' (and model.drop_top)")
    from autolr.preflight import check

    check(recipe)  # the checks `autolr validate` runs, before any folder exists
    accelerator, precision_note = _make_accelerator(recipe)
    _setup_logging(None, accelerator.is_main_process)  # console now; run.log once the folder exists
    rundir, state = _open_run(recipe, accelerator, output, resume, overwrite)
    _setup_logging(rundir.path, accelerator.is_main_process)
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
        _remove_if_unstarted(accelerator, rundir)  # whatever failed before the first epoch leaves no folder
        raise
    finally:
        _close_trackers(accelerator)  # also when the loss diverged; the process group stays (see _end_at_exit)
    return RunResult(rundir.path, metrics)


def _run_mode(recipe: Recipe, accelerator, rundir: RunDir, selection: bool) -> dict[str, Any]:
    if recipe.prune.mode == "iterative":
        from autolr.silo import run_iterative

        return run_iterative(recipe, accelerator, rundir)
    prune_metrics: dict[str, Any] = {}
    if recipe.prune.mode == "search":
        from autolr.prune import search_depth

        recipe, prune_metrics = search_depth(recipe, accelerator, rundir)
    return train_and_evaluate(recipe, accelerator, rundir, selection=selection, extra_metrics=prune_metrics)


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


def _remove_if_unstarted(accelerator, rundir: RunDir) -> None:
    if accelerator.is_main_process and not rundir.has_progress():
        rundir.remove()


def _close_trackers(accelerator) -> None:
    """What `end_training` does for one run, less destroying the process group: a sweep or search runs
    many trainings in one command, and accelerate 1.15 cannot bring a destroyed group back."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


_ENDING: list[bool] = []  # set once the process group's end is registered


def _end_at_exit(accelerator) -> None:
    """The process group lives for the whole command and is destroyed once, as the process exits."""
    if accelerator.num_processes > 1 and not _ENDING:
        import atexit

        _ENDING.append(True)
        from accelerate import PartialState

        atexit.register(lambda: PartialState().destroy_process_group())


def train_and_evaluate(
    recipe: Recipe, accelerator, rundir: RunDir, *, selection: bool = False, extra_metrics: dict | None = None
) -> dict[str, Any]:
    """One training in an open run folder: setup (or resume), score before, fit, score after, save."""
    try:
        trainer = setup(recipe, accelerator, rundir, selection=selection)
    except Exception:
        _remove_if_unstarted(accelerator, rundir)  # a candidate or run that could not start leaves nothing behind
        raise
    initial = main_reads(accelerator, rundir.initial_metrics) if trainer.epoch else None
    if initial is None:
        initial = evaluate(trainer)
        rundir.save_initial_metrics(initial) if trainer.is_main else None
    fit(trainer)
    metrics = finish(trainer, initial, extra_metrics or {})
    accelerator.free_memory()  # drop accelerate's references to this model and optimizer
    return metrics


def fit(trainer: Trainer) -> None:
    """The epochs still to run: train (AutoLR trials or one pass), maybe evaluate, log, checkpoint."""
    recipe, accelerator = trainer.recipe, trainer.accelerator
    autolr = recipe.train.schedule == "autolr" and trainer.lr_fn is None
    for epoch in range(trainer.epoch, recipe.train.epochs):
        stats = run_epoch(trainer, epoch, autolr)
        row = {"epoch": epoch + 1, "kind": "epoch", **stats}
        if accelerator.num_processes > 1:  # the record that every rank trains with the same LRs
            lrs = torch.tensor([row["lrs"]], dtype=torch.float64, device=accelerator.device)
            row["lrs_by_rank"] = accelerator.gather(lrs).tolist()
        if recipe.eval.every and (epoch + 1) % recipe.eval.every == 0 and epoch + 1 < recipe.train.epochs:
            row["test"] = evaluate(trainer)
        trainer.epoch = epoch + 1
        _log_epoch(row, recipe.train.epochs, trainer.task)
        if trainer.is_main:
            trainer.rundir.log(row)
            trainer.rundir.save_checkpoint(trainer, keep=recipe.train.keep_checkpoints)
        accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch + 1)
        accelerator.wait_for_everyone()


def run_epoch(trainer: Trainer, epoch: int, autolr: bool) -> dict[str, Any]:
    """One epoch (AutoLR's trials or one pass), with every block's weight variation over it (Fig. 2)."""
    if autolr:
        return autolr_epoch(trainer, epoch)
    before = [[w.detach().clone() for w in ws] for ws in _block_weights(trainer)]
    stats = train_one_epoch(trainer, epoch)
    return {**stats, "v": _weight_variation(trainer, before)}


def finish(trainer: Trainer, initial: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the final model, write `metrics.json` and the model, print the table.

    A selection run (scored on the validation split) exports no model and drops its checkpoints: only
    its score and log are kept.
    """
    recipe = trainer.recipe
    metrics = {
        **evaluate(trainer),
        "initial": initial,
        "split": "val" if trainer.selection else "test",
        "dataset": recipe.data.name,
        "model": recipe.model.name,
        "drop_top": recipe.model.drop_top,
        "epochs": recipe.train.epochs,
        **(extra or {}),
        "wall_time": round(trainer.rundir.wall_time(), 2),
    }
    if trainer.is_main:
        from autolr.model import save_model

        if trainer.selection:
            trainer.rundir.save_metrics(metrics)
            trainer.rundir.drop_checkpoints()
        else:
            save_model(trainer.model, recipe.model, trainer.rundir.path)
            trainer.rundir.save_metrics(metrics)
            print_metrics(metrics)
            from autolr.report import write_report

            write_report(trainer.rundir.path)  # plots and summary.md; a plot that fails is only a warning
    return metrics


def _log_epoch(row: dict[str, Any], epochs: int, task: str = "retrieval") -> None:
    extra = f", {row['trials']} trial(s)" if "trials" in row else ""
    key = "accuracy" if task == "classification" else "recall@1"
    test = f", test {key} {row['test'][key]:.4f}" if "test" in row else ""
    log.info("epoch %d/%d: loss %.4f, %.0f img/s, %.1f s%s%s", row["epoch"], epochs, row["loss"],
             row["images_per_s"], row["seconds"], extra, test)


def _make_accelerator(recipe: Recipe):
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


def _start_trackers(accelerator, recipe: Recipe, run_dir: Path) -> None:
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


def setup(
    recipe: Recipe, accelerator, rundir: RunDir, *, selection: bool = False, restore: bool = True,
    make_net: Callable[[torch.nn.Module, int], torch.nn.Module] | None = None,
) -> Trainer:
    """Data, model, optimizer, loaders; restores the last checkpoint when resuming.

    `selection`: train on the training classes minus the validation split and evaluate that split.
    `restore=False` leaves the restore to the caller (iterative pruning must re-apply its masks first).
    `make_net(backbone, num_classes)`: a RetrievalNet subclass instead of the plain one.
    """
    from autolr.data import load_data
    from autolr.data.loader import make_loader
    from autolr.data.transforms import build_transforms, test_resize
    from autolr.model import RetrievalNet, create_backbone, param_groups
    from autolr.train.optim import build_optimizer
    from autolr.train.optim import describe as describe_optimizer

    torch.manual_seed(recipe.train.seed)
    backbone = create_backbone(recipe.model, recipe.data.image_size)  # first: a weights problem shows before data is read
    train_tf, test_tf, size = build_transforms(recipe.data, backbone.pretrained_cfg)
    with accelerator.local_main_process_first():  # a first load may write a cache: once per node
        # the smallest prepared copy that is still large enough for this model's test resize
        data = load_data(recipe.data, seed=recipe.train.seed, min_side=test_resize(size), for_selection=selection)
    net = (make_net or partial(RetrievalNet, embedding_dim=recipe.model.embedding_dim,
                               head=recipe.train.loss == "cross_entropy"))(backbone, data.num_classes)
    _attach_loss(recipe, net, data)  # before the param groups: a loss's proxies train in the head's
    if _channels_last(recipe, accelerator, net):
        net = net.to(memory_format=torch.channels_last)
    log.info(
        "%s (%s): %d training images in %d classes at %d px, evaluated on %s; model %s with %d blocks",
        data.name, data.source or "built in", len(data.train), data.num_classes, size, data.eval_on, recipe.model.name,
        sum(1 for g in param_groups(net, recipe.model.name, 1, 1) if g["name"].startswith("block")),
    )
    t = recipe.train
    optimizer = build_optimizer(param_groups(net, recipe.model.name, t.lr, t.head_lr), t, _no_weight_decay(net))
    log.info("%s", describe_optimizer(optimizer, t))
    batch = per_process_batch(recipe.data.batch_size, accelerator.num_processes, recipe.data.samples_per_class)
    log.info("batch: %d images per step (data.batch_size, global) = %d per process x %d process(es)",
             recipe.data.batch_size, batch, accelerator.num_processes)
    loader_args = dict(
        batch_size=batch, workers=recipe.data.workers, seed=recipe.train.seed,
        pin_memory=accelerator.device.type == "cuda",
    )
    train_loader = make_loader(
        data.train, train_tf, train=True, rank=accelerator.process_index,
        world=accelerator.num_processes, samples_per_class=recipe.data.samples_per_class, **loader_args,
    )
    if len(train_loader) == 0:
        raise AutolrError(
            f"data.batch_size = {recipe.data.batch_size} is larger than the {len(data.train)} training"
            " images: lower it"
        )
    eval_loaders = {
        name: make_loader(
            split, test_tf, train=False, rank=accelerator.process_index, world=accelerator.num_processes,
            **(loader_args | {"batch_size": recipe.eval.batch_size}),
        )
        for name, split in data.eval_splits().items()
    }
    net, optimizer = accelerator.prepare(net, optimizer)
    if recipe.model.compile:
        net = torch.compile(net)
    if recipe.output.log_with:
        _start_trackers(accelerator, recipe, rundir.path)
    recall_at = data.recall_at if recipe.eval.recall_at == "auto" else list(recipe.eval.recall_at)
    trainer = Trainer(recipe, accelerator, net, optimizer, train_loader, eval_loaders, recall_at, rundir,
                      task=getattr(data, "task", "retrieval"), selection=selection)
    if trainer.model.criterion is not None:  # a metric loss: (embeddings, labels) -> loss
        trainer.loss_fn = trainer.model.criterion
    _check_autolr_blocks(trainer)
    if restore:
        rundir.restore_checkpoint(trainer)
    _init_lrs(trainer)  # after the restore: a resumed run takes the recipe's (maybe lowered) LRs
    return trainer


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


def _attach_loss(recipe: Recipe, net, data) -> None:
    """A pytorch-metric-learning loss as `net.criterion` (so DDP, checkpoints and AutoLR's snapshots
    carry its proxies); nothing for cross-entropy, which the head's logits feed."""
    name = recipe.train.loss
    if name == "cross_entropy":
        return
    if getattr(data, "task", "retrieval") == "classification":
        raise AutolrError(f"train.loss = {name!r} trains an embedding, but {data.name} is scored by the"
                          " classification head's accuracy: use train.loss = 'cross_entropy' (or a retrieval dataset)")
    from autolr.train.losses import build_loss

    net.criterion = build_loss(name, recipe.loss, data.num_classes, net.embedding_dim)


def _no_weight_decay(net) -> set[int]:
    """The backbone tensors timm exempts from weight decay besides 1-d ones (a ViT's pos_embed, cls_token)."""
    names = set(getattr(net.backbone, "no_weight_decay", lambda: set())())
    return {id(p) for n, p in net.backbone.named_parameters() if n in names}


def _check_autolr_blocks(trainer: Trainer) -> None:
    if trainer.recipe.train.schedule == "autolr" and trainer.recipe.prune.mode != "iterative" and len(_block_groups(trainer)) < 2:
        raise AutolrError(
            f"train.schedule = 'autolr' needs at least 2 blocks; {trainer.recipe.model.name} has"
            f" {len(_block_groups(trainer))} after model.drop_top = {trainer.recipe.model.drop_top}: lower"
            " drop_top or pick another schedule"
        )


def _init_lrs(trainer: Trainer) -> None:
    """Every group's `base_lr` from the recipe: head_lr for the head, train.lr for the rest; layer decay
    scales them; AutoLR's blocks take their current LRs (train.lr at the start, the checkpoint's after a
    resume, clamped to [autolr.min_lr, autolr.max_lr] so that a lowered max_lr takes effect)."""
    t, blocks = trainer.recipe.train, _block_groups(trainer)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    for name, g in groups.items():
        g["base_lr"] = t.head_lr if name == "head" else t.lr
    if t.schedule == "layer_decay" or (t.layer_decay_always and t.schedule != "autolr"):
        from autolr.schedules import layer_decay_scales

        scales = layer_decay_scales(len(blocks), t.layer_decay)  # stem, blocks..., head
        names = ["stem", *(g["name"] for g in blocks), "head"]
        for name, scale in zip(names, scales, strict=True):
            if name in groups:
                groups[name]["base_lr"] *= scale
        if "neck" in groups:
            groups["neck"]["base_lr"] *= scales[-2]
    if t.schedule == "autolr":
        cfg = trainer.recipe.autolr
        state = trainer.extra.setdefault("autolr", {"lrs": [t.lr] * len(blocks), "tau": cfg.tau})
        state["lrs"] = [min(max(lr, cfg.min_lr), cfg.max_lr) for lr in state["lrs"]]
        _set_autolr_base_lrs(trainer, state["lrs"])


def _channels_last(recipe: Recipe, accelerator, net) -> bool:
    """`auto`: on for conv nets on a GPU, where it is faster; off on CPU."""
    if recipe.model.channels_last != "auto":
        return bool(recipe.model.channels_last)
    is_conv = any(isinstance(m, torch.nn.Conv2d) for m in net.backbone.modules())
    return is_conv and accelerator.device.type == "cuda"


def set_lrs(trainer: Trainer, epoch: int, step: int) -> None:
    """Every group's `lr` = its `base_lr` x the schedule's factor at this step (a pure function of time)."""
    from autolr.schedules import apply_lrs, lr_factor
    from autolr.train.optim import sync_no_decay

    sync_no_decay(trainer.optimizer)  # the no-decay twin groups take their group's base_lr
    steps = len(trainer.train_loader)
    if trainer.lr_fn is not None:
        apply_lrs(trainer.optimizer, trainer.lr_fn(epoch, step, steps))
        return
    apply_lrs(trainer.optimizer, lr_factor(trainer.recipe.train, epoch=epoch, step=step, steps_per_epoch=steps))


def train_one_epoch(trainer: Trainer, epoch: int) -> dict[str, float]:
    """One pass over the training split; the loss is read on the host only every `log_every` steps.

    Gradient accumulation is explicit: every `train.grad_accum` batches make one optimizer step, and
    the epoch's last, shorter group steps too, so nothing carries over into the next epoch or trial
    (accelerate's `accumulate` keeps counting across epochs when the loader is not prepared by it).
    """
    from autolr.train.optim import named_groups

    acc, net, opt = trainer.accelerator, trainer.net, trainer.optimizer
    loader, every, accum = trainer.train_loader, trainer.recipe.train.log_every, trainer.recipe.train.grad_accum
    (loader.batch_sampler if hasattr(loader.batch_sampler, "set_epoch") else loader.sampler).set_epoch(epoch)
    net.train()
    opt.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=acc.device)
    bad = torch.zeros((), dtype=torch.bool, device=acc.device)
    seen, started, steps = 0, time.time(), len(loader)
    memory_format = torch.channels_last if _is_channels_last(trainer) else torch.contiguous_format
    total = trainer.total_epochs or trainer.recipe.train.epochs
    with _progress(trainer, f"epoch {epoch + 1}/{total}", steps) as bar:
        for step, (x, y) in enumerate(loader, 1):
            group_start = (step - 1) // accum * accum  # 0-based step that opened this accumulation group
            set_lrs(trainer, epoch, group_start)
            x = x.to(acc.device, non_blocking=True, memory_format=memory_format)
            y = y.to(acc.device, non_blocking=True)
            sync = step % accum == 0 or step == steps
            with contextlib.nullcontext() if sync else acc.no_sync(net):
                loss = trainer.loss_fn(net(x), y)
                acc.backward(loss / min(accum, steps - group_start))
            if sync:
                opt.step()
                opt.zero_grad(set_to_none=True)
            loss = loss.detach()
            loss_sum += loss
            bad |= ~torch.isfinite(loss)
            seen += len(x)
            if step % every == 0 or step == len(loader):
                _check_finite(trainer, bad)
                rate = seen * acc.num_processes / max(time.time() - started, 1e-9)
                bar(step, f"loss {loss_sum.item() / step:.4f}  {rate:.0f} img/s")
            else:
                bar(step, None)
    seconds = time.time() - started
    return {
        "loss": float(acc.reduce(loss_sum, "mean").item()) / len(loader),
        "seconds": round(seconds, 3),
        "images_per_s": round(seen * acc.num_processes / seconds, 1),
        "steps": -(-steps // accum),  # optimizer steps: the same on any number of processes
        "lrs": [g["lr"] for g in named_groups(opt)],
        "groups": [g["name"] for g in named_groups(opt)],
    }


def autolr_epoch(trainer: Trainer, epoch: int) -> dict[str, Any]:
    """Algorithm 2: run the epoch as trials until the blocks' weight variations are sorted enough.

    Each rejected trial sets targets (once per epoch), renews every block's LR and restarts the epoch
    from its snapshot with the same data order, augmentation and dropout masks. After `max_trials` the
    best-scoring trial is kept. A renewal that leaves every LR as it was (every block clamped, say)
    ends the epoch: the next trial would replay this one exactly. Every trial is a row in `log.jsonl`;
    the epoch's row counts the seconds and images of all its trials (what the epoch cost), not only
    the kept one's.
    """
    from autolr.lr import accept, initial_targets, relax_tau, renew_lrs, repair_targets, sorting_quality

    cfg, state = trainer.recipe.autolr, trainer.extra["autolr"]
    snapshot = _snapshot(trainer)
    before = _block_weights_in(trainer, snapshot["model"])  # epoch-start weights: views into the snapshot
    targets, best, ran, stop = None, None, [], "max_trials"
    for trial in range(1, cfg.max_trials + 1):
        _set_autolr_base_lrs(trainer, state["lrs"])
        if cfg.reset_momentum:  # all the optimizer keeps: momentum, Adam's moments, step counters
            from autolr.train.optim import reset_state

            reset_state(trainer.optimizer)
        stats = train_one_epoch(trainer, epoch)
        ran.append(stats)
        v = _broadcast(trainer, _weight_variation(trainer, before))  # rank 0's v: every rank decides alike
        score = sorting_quality(v)
        accepted = accept(score, state["tau"], cfg.strict)
        _log_trial(trainer, epoch, trial, v, targets, score, accepted, stats)
        if accepted:
            stop = "accepted"
            break
        last = trial == cfg.max_trials
        if best is None or score > best[0]:  # a later trial may do worse: keep this one's end state
            best = (score, trial, list(state["lrs"]), None if last else _snapshot(trainer), stats, v)
        if last:
            break
        if targets is None:
            targets = initial_targets(v, cfg.alpha, cfg.beta) if epoch == 0 else repair_targets(v)
        renewed = renew_lrs(state["lrs"], v, targets, cfg.min_lr, cfg.max_lr)
        if _same(renewed, state["lrs"]):  # same LRs, snapshot and data: the next trial would replay this one
            stop = "same_lrs"
            log.info("epoch %d: trial %d's renewed LRs equal the LRs it ran with (each block at its target,"
                     " not moving, or clamped to autolr.min_lr/max_lr = %.3g/%.3g), so another trial would"
                     " replay it exactly: not rerun", epoch + 1, trial, cfg.min_lr, cfg.max_lr)
            break
        state["lrs"] = renewed
        _restore(trainer, snapshot)
    if not accepted:
        if best[1] != trial:
            _restore(trainer, best[3])
            state["lrs"], stats, v = best[2], best[4], best[5]
        log.info("epoch %d: no trial reached S >= %.3f in %d trial(s); kept trial %d (S = %.3f)",
                 epoch + 1, state["tau"], trial, best[1], best[0])
    state["tau"] = relax_tau(state["tau"], cfg.strict)
    _set_autolr_base_lrs(trainer, state["lrs"])
    kept = trial if accepted else best[1]
    return {**stats, **_epoch_cost(trainer, ran), "v": v, "trials": trial, "kept_trial": kept,
            "sorting_quality": score if accepted else best[0], "trial_stop": stop}


def _same(new: list[float], old: list[float]) -> bool:
    """Equal up to float rounding: lr * target / v with target = v can come back one ulp off lr."""
    return all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(new, old, strict=True))


def _images(trainer: Trainer, stats: dict[str, Any]) -> int:
    """Images one pass trained on: the loop's own count, else full batches (training drops the last)."""
    if "images" in stats:
        return int(stats["images"])
    return len(trainer.train_loader) * trainer.recipe.data.batch_size * trainer.accelerator.num_processes


def _epoch_cost(trainer: Trainer, ran: list[dict[str, Any]]) -> dict[str, Any]:
    """What the whole epoch cost, every trial included: seconds, images, and each trial's seconds."""
    seconds = sum(s["seconds"] for s in ran)
    images = sum(_images(trainer, s) for s in ran)
    return {"seconds": round(seconds, 3), "images": images, "images_per_s": round(images / max(seconds, 1e-9), 1),
            "trial_seconds": [s["seconds"] for s in ran]}


def _block_groups(trainer: Trainer) -> list[dict]:
    return [g for g in trainer.optimizer.param_groups if g["name"].startswith("block")]


def _block_weights(trainer: Trainer) -> list[list[torch.Tensor]]:
    """Each block's conv and linear weights (ndim >= 2); norms and biases do not count (method.md 3.1)."""
    return [[p for p in g["params"] if p.dim() >= 2] for g in _block_groups(trainer)]


def _block_weights_in(trainer: Trainer, state: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
    """The blocks' conv/linear weights as found in a (snapshot) state dict of the bare model."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return [[state[names[id(w)]] for w in ws] for ws in _block_weights(trainer)]


def _weight_variation(trainer: Trainer, before: list[list[torch.Tensor]]) -> list[float]:
    from autolr.lr import weight_variation

    return weight_variation(before, [[w.detach() for w in ws] for ws in _block_weights(trainer)])


def _set_autolr_base_lrs(trainer: Trainer, lrs: list[float]) -> None:
    """Blocks take AutoLR's LRs; the stem `stem_scale` x block 1's; the neck follows the top block."""
    cfg = trainer.recipe.autolr
    for g, lr in zip(_block_groups(trainer), lrs, strict=True):
        g["base_lr"] = lr
    for g in trainer.optimizer.param_groups:
        if g["name"] == "stem":
            g["base_lr"] = cfg.stem_scale * lrs[0]
        elif g["name"] == "neck":
            g["base_lr"] = lrs[-1]
        elif g["name"] == "head" and not cfg.hold_head:
            g["base_lr"] = lrs[-1] * trainer.recipe.train.head_lr / trainer.recipe.train.lr


def _snapshot(trainer: Trainer) -> dict[str, Any]:
    """Weights, norm buffers, optimizer state and RNG, cloned on the training device (no host copy)."""
    from autolr.train.optim import snapshot_state

    scaler = trainer.accelerator.scaler  # fp16 only: its loss scale is part of the state a trial starts from
    return {
        "model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": snapshot_state(trainer.optimizer),  # with group step counters and Lookahead's slow weights
        "rng": _rng_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }


def _restore(trainer: Trainer, snap: dict[str, Any]) -> None:
    with torch.no_grad():
        for k, v in trainer.model.state_dict().items():
            v.copy_(snap["model"][k])
    from autolr.train.optim import restore_state

    restore_state(trainer.optimizer, snap["optimizer"])
    _set_rng_state(snap["rng"])
    if snap["scaler"] is not None:
        trainer.accelerator.scaler.load_state_dict(snap["scaler"])


def _rng_state() -> dict[str, Any]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _broadcast(trainer: Trainer, values: list[float]) -> list[float]:
    if trainer.accelerator.num_processes == 1:
        return values
    from accelerate.utils import broadcast

    t = torch.tensor(values, dtype=torch.float64, device=trainer.accelerator.device)
    return broadcast(t, from_process=0).tolist()


def _log_trial(trainer, epoch, trial, v, targets, score, accepted, stats) -> None:
    """One trial: its v, targets and S, and the block LRs it actually used (AutoLR's own LRs times the
    step decay, `base_lrs` before it), its seconds and images."""
    state = trainer.extra["autolr"]
    row = {
        "epoch": epoch + 1, "kind": "trial", "trial": trial, "v": v, "target": targets,
        "lrs": [g["lr"] for g in _block_groups(trainer)], "base_lrs": list(state["lrs"]),
        "sorting_quality": round(score, 6), "tau": state["tau"], "accepted": accepted, "loss": stats["loss"],
        "seconds": stats["seconds"], "images": _images(trainer, stats),
    }
    if trainer.is_main:
        trainer.rundir.log(row)
    log.info("epoch %d trial %d: S = %.4f (tau %.3f) %s, loss %.4f", epoch + 1, trial, score, state["tau"],
             "accepted" if accepted else "rejected", stats["loss"])


def _is_channels_last(trainer: Trainer) -> bool:
    p = next(trainer.model.backbone.parameters())
    return p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()


def _check_finite(trainer: Trainer, bad: torch.Tensor) -> None:
    """Stop cleanly on a NaN/inf loss, naming the groups whose LRs were highest."""
    if not bool(trainer.accelerator.reduce(bad.float(), "max").item()):
        return
    blocks = sorted(_block_groups(trainer), key=lambda g: -g["lr"])[:3]
    names = ", ".join(f"{g['name']} (lr {g['lr']:.3g})" for g in blocks)
    head = next((g["lr"] for g in trainer.optimizer.param_groups if g["name"] == "head"), None)
    kept = (f"the checkpoint of epoch {trainer.epoch} is kept: lower them and continue with --resume"
            if trainer.epoch else "no epoch finished, so there is no checkpoint: lower them and run again")
    raise Diverged(
        f"the loss became NaN/inf in epoch {trainer.epoch + 1}; the blocks with the highest LRs: {names}"
        + (f"; head lr {head:.3g}" if head is not None else "")
        + f". Lower train.lr / train.head_lr (or autolr.max_lr); {kept}"
    )


class _progress:
    """A rich progress bar on the main process; `bar(step, text)` advances it."""

    def __init__(self, trainer: Trainer, title: str, total: int):
        self.enabled, self.title, self.total = trainer.is_main, title, total

    def __enter__(self):
        if not self.enabled:
            return lambda step, text: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), transient=True, console=_console(),
            # no refresh thread: it competes with the step loop for the GIL; `_update` redraws at most
            # twice a second from the loop itself
            redirect_stdout=False, auto_refresh=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.title, total=self.total, info="")
        self.drawn = 0.0
        return self._update

    def _update(self, step: int, text: str | None) -> None:
        fields = {"info": text} if text is not None else {}
        self.progress.update(self.task, completed=step, **fields)
        now = time.monotonic()
        if now - self.drawn >= 0.5 or step == self.total:
            self.drawn = now
            self.progress.refresh()

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()
        return False


@torch.no_grad()
def embed(trainer: Trainer, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (with the horizontal flip summed in when `eval.flip`) and labels, in dataset order."""
    from autolr.evaluation import embed as embed_on

    acc, model = trainer.accelerator, trainer.model
    was_training = model.training
    model.eval()
    with acc.autocast():
        feats, labels = embed_on(model, loader, acc.device, trainer.recipe.eval.flip)
    model.train(was_training)
    return _gather_in_order(acc, feats, len(loader.dataset)), _gather_in_order(acc, labels, len(loader.dataset))


def _gather_in_order(acc, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Rank r embedded items r, r + W, r + 2W, ... (padded by wrapping): gather and restore dataset order."""
    if acc.num_processes == 1:
        return rows
    gathered = acc.gather(rows.contiguous())  # [W * per, ...], rank-major
    per = rows.shape[0]
    return gathered.view(acc.num_processes, per, *rows.shape[1:]).transpose(0, 1).reshape(-1, *rows.shape[1:])[:n]


def evaluate(trainer: Trainer) -> dict[str, float]:
    """Recall@K and MAP@R (retrieval) or accuracy (classification) on the evaluation split(s); the
    same on every rank."""
    from autolr.metrics import recall_and_map

    if trainer.task == "classification":
        return evaluate_accuracy(trainer)
    out = {name: embed(trainer, loader) for name, loader in trainer.eval_loaders.items()}
    if "test" in out:
        q, ql = out["test"]
        g = gl = None
    else:
        (q, ql), (g, gl) = out["query"], out["gallery"]
    metrics = {}
    if trainer.is_main:  # score once, then share
        recalls, mapr = recall_and_map(q, ql, trainer.recall_at, g, gl)  # one pass over the similarities
        metrics = {f"recall@{k}": round(v, 6) for k, v in recalls.items()}
        metrics["map@r"] = round(mapr, 6)
    if trainer.accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        metrics = broadcast_object_list([metrics])[0]
    return metrics


@torch.no_grad()
def evaluate_accuracy(trainer: Trainer) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the training head on the test split (the same classes as training)."""
    from autolr.evaluation import predict
    from autolr.metrics import top_k_accuracy

    acc, model, loader = trainer.accelerator, trainer.model, trainer.eval_loaders["test"]
    was_training = model.training
    model.eval()
    with acc.autocast():
        logits, labels = predict(model, loader, acc.device)
    model.train(was_training)
    n = len(loader.dataset)
    return top_k_accuracy(_gather_in_order(acc, logits, n), _gather_in_order(acc, labels, n))


def print_metrics(metrics: dict[str, Any]) -> None:
    """The Recall@K table: before fine-tuning, after, and the gain."""
    from rich.table import Table

    table = Table(title=f"{metrics['model']} on {metrics['dataset']} ({metrics.get('split', 'test')} split)")
    for col in ("metric", "before", "after", "gain"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, after in metrics.items():
        if key.startswith(("recall@", "map@", "accuracy")):
            before = metrics["initial"].get(key, math.nan)
            table.add_row(key, f"{100 * before:.2f}", f"{100 * after:.2f}", f"{100 * (after - before):+.2f}")
    _console().print(table)
    _console().print(f"wall time {metrics['wall_time']:.0f} s")


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _setup_logging(run_dir: Path | None, main: bool) -> None:
    """Rich console logging on the main process, and a plain `run.log` in the run folder."""
    from rich.logging import RichHandler

    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_autolr", False):
            log.removeHandler(h)
            h.close()
    if not main:
        return
    handlers = [RichHandler(console=_console(), show_path=False, show_time=False)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "run.log"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for h in handlers:
        h._autolr = True
        log.addHandler(h)

