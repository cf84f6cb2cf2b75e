"""The training loop, linear and readable: setup -> (train one epoch -> evaluate -> save)* -> finish.

`train_and_evaluate` is one training in an open run folder; the modes (`autolr.modes`) compose it, or
its parts, into a fine-tuning, a depth search or pruning cycles. An epoch is one pass over the training
split, or AutoLR's trials of it (`autolr.train.autolr`) when train.schedule = "autolr"; iterative pruning
sets its own LR schedule through `Trainer.lr_fn`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from autolr.console import ProgressBar, log_epoch, print_metrics
from autolr.data import load_data
from autolr.data.loader import make_loader
from autolr.data.transforms import build_transforms, test_resize
from autolr.errors import AutolrError, Diverged
from autolr.eval.metrics import recall_and_map, top_k_accuracy
from autolr.eval.saved import embed as embed_on
from autolr.eval.saved import predict
from autolr.model import RetrievalNet, create_backbone, param_groups, save_model
from autolr.recipe import Recipe
from autolr.rundir import RunDir, main_reads, remove_if_unstarted
from autolr.train.accel import gather_in_order, per_process_batch, start_trackers
from autolr.train.autolr import (
    autolr_epoch,
    block_groups,
    block_weights,
    check_blocks,
    init_state,
    measure_variation,
)
from autolr.train.losses import attach_loss
from autolr.train.optim import build_optimizer, named_groups, no_weight_decay_ids, sync_no_decay
from autolr.train.optim import describe as describe_optimizer
from autolr.train.schedules import apply_lrs, layer_decay_scales, lr_factor
from autolr.train.snapshots import apply_checkpoint, checkpoint_state

log = logging.getLogger("autolr")


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


def train_and_evaluate(
    recipe: Recipe, accelerator, rundir: RunDir, *, selection: bool = False, extra_metrics: dict | None = None
) -> dict[str, Any]:
    """One training in an open run folder: setup (or resume), score before, fit, score after, save."""
    try:
        trainer = setup(recipe, accelerator, rundir, selection=selection)
    except Exception:
        remove_if_unstarted(accelerator, rundir)  # a candidate or run that could not start leaves nothing behind
        raise
    initial = main_reads(accelerator, rundir.initial_metrics) if trainer.epoch else None
    if initial is None:
        initial = evaluate(trainer)
        rundir.save_initial_metrics(initial) if trainer.is_main else None
    fit(trainer)
    metrics = finish(trainer, initial, extra_metrics or {})
    accelerator.free_memory()  # drop accelerate's references to this model and optimizer
    return metrics


def setup(
    recipe: Recipe, accelerator, rundir: RunDir, *, selection: bool = False, restore: bool = True,
    make_net: Callable[[torch.nn.Module, int], torch.nn.Module] | None = None,
) -> Trainer:
    """Data, model, optimizer, loaders; restores the last checkpoint when resuming.

    `selection`: train on the training classes minus the validation split and evaluate that split.
    `restore=False` leaves the restore to the caller (iterative pruning must re-apply its masks first).
    `make_net(backbone, num_classes)`: a RetrievalNet subclass instead of the plain one.
    """
    torch.manual_seed(recipe.train.seed)
    backbone = create_backbone(recipe.model, recipe.data.image_size)  # first: a weights problem shows before data is read
    train_tf, test_tf, size = build_transforms(recipe.data, backbone.pretrained_cfg)
    with accelerator.local_main_process_first():  # a first load may write a cache: once per node
        # the smallest prepared copy that is still large enough for this model's test resize
        data = load_data(recipe.data, seed=recipe.train.seed, min_side=test_resize(size), for_selection=selection)
    net = (make_net or partial(RetrievalNet, embedding_dim=recipe.model.embedding_dim,
                               head=recipe.train.loss == "cross_entropy"))(backbone, data.num_classes)
    attach_loss(recipe, net, data)  # before the param groups: a loss's proxies train in the head's
    if _channels_last(recipe, accelerator, net):
        net = net.to(memory_format=torch.channels_last)
    log.info(
        "%s (%s): %d training images in %d classes at %d px, evaluated on %s; model %s with %d blocks",
        data.name, data.source or "built in", len(data.train), data.num_classes, size, data.eval_on, recipe.model.name,
        sum(1 for g in param_groups(net, recipe.model.name, 1, 1) if g["name"].startswith("block")),
    )
    t = recipe.train
    optimizer = build_optimizer(param_groups(net, recipe.model.name, t.lr, t.head_lr), t, no_weight_decay_ids(net))
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
        start_trackers(accelerator, recipe, rundir.path)
    recall_at = data.recall_at if recipe.eval.recall_at == "auto" else list(recipe.eval.recall_at)
    trainer = Trainer(recipe, accelerator, net, optimizer, train_loader, eval_loaders, recall_at, rundir,
                      task=getattr(data, "task", "retrieval"), selection=selection)
    if trainer.model.criterion is not None:  # a metric loss: (embeddings, labels) -> loss
        trainer.loss_fn = trainer.model.criterion
    check_blocks(trainer)
    if restore:
        restore_checkpoint(trainer)
    init_lrs(trainer)  # after the restore: a resumed run takes the recipe's (maybe lowered) LRs
    return trainer


def restore_checkpoint(trainer: Trainer) -> None:
    """Continue from the run folder's newest checkpoint, if it has one."""
    state = trainer.rundir.load_checkpoint(trainer.accelerator)
    if state is not None:
        apply_checkpoint(trainer, state)


def init_lrs(trainer: Trainer) -> None:
    """Every group's `base_lr` from the recipe: head_lr for the head, train.lr for the rest; layer decay
    scales them; AutoLR's blocks take their current LRs (`autolr.train.autolr.init_state`)."""
    t, blocks = trainer.recipe.train, block_groups(trainer)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    for name, g in groups.items():
        g["base_lr"] = t.head_lr if name == "head" else t.lr
    if t.schedule == "layer_decay" or (t.layer_decay_always and t.schedule != "autolr"):
        scales = layer_decay_scales(len(blocks), t.layer_decay)  # stem, blocks..., head
        names = ["stem", *(g["name"] for g in blocks), "head"]
        for name, scale in zip(names, scales, strict=True):
            if name in groups:
                groups[name]["base_lr"] *= scale
        if "neck" in groups:
            groups["neck"]["base_lr"] *= scales[-2]
    if t.schedule == "autolr":
        init_state(trainer)


def _channels_last(recipe: Recipe, accelerator, net) -> bool:
    """`auto`: on for conv nets on a GPU, where it is faster; off on CPU."""
    if recipe.model.channels_last != "auto":
        return bool(recipe.model.channels_last)
    is_conv = any(isinstance(m, torch.nn.Conv2d) for m in net.backbone.modules())
    return is_conv and accelerator.device.type == "cuda"


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
        log_epoch(row, recipe.train.epochs, trainer.task)
        if trainer.is_main:
            trainer.rundir.log(row)
            trainer.rundir.save_checkpoint(checkpoint_state(trainer), keep=recipe.train.keep_checkpoints)
        accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch + 1)
        accelerator.wait_for_everyone()


def run_epoch(trainer: Trainer, epoch: int, autolr: bool) -> dict[str, Any]:
    """One epoch (AutoLR's trials or one pass), with every block's weight variation over it (Fig. 2)."""
    if autolr:
        return autolr_epoch(trainer, epoch, train_one_epoch)
    before = [[w.detach().clone() for w in ws] for ws in block_weights(trainer)]
    stats = train_one_epoch(trainer, epoch)
    return {**stats, "v": measure_variation(trainer, before)}


def set_lrs(trainer: Trainer, epoch: int, step: int) -> None:
    """Every group's `lr` = its `base_lr` x the schedule's factor at this step (a pure function of time)."""
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
    with ProgressBar(trainer.is_main, f"epoch {epoch + 1}/{total}", steps) as bar:
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


def _is_channels_last(trainer: Trainer) -> bool:
    p = next(trainer.model.backbone.parameters())
    return p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()


def _check_finite(trainer: Trainer, bad: torch.Tensor) -> None:
    """Stop cleanly on a NaN/inf loss, naming the groups whose LRs were highest."""
    if not bool(trainer.accelerator.reduce(bad.float(), "max").item()):
        return
    blocks = sorted(block_groups(trainer), key=lambda g: -g["lr"])[:3]
    names = ", ".join(f"{g['name']} (lr {g['lr']:.3g})" for g in blocks)
    head = next((g["lr"] for g in trainer.optimizer.param_groups if g["name"] == "head"), None)
    kept = (f"the checkpoint of epoch {trainer.epoch} is kept: lower them and continue with --resume"
            if trainer.epoch else "no epoch finished, so there is no checkpoint: lower them and run again")
    raise Diverged(
        f"the loss became NaN/inf in epoch {trainer.epoch + 1}; the blocks with the highest LRs: {names}"
        + (f"; head lr {head:.3g}" if head is not None else "")
        + f". Lower train.lr / train.head_lr (or autolr.max_lr); {kept}"
    )


@torch.no_grad()
def embed(trainer: Trainer, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (with the horizontal flip summed in when `eval.flip`) and labels, in dataset order."""
    acc, model = trainer.accelerator, trainer.model
    was_training = model.training
    model.eval()
    with acc.autocast():
        feats, labels = embed_on(model, loader, acc.device, trainer.recipe.eval.flip)
    model.train(was_training)
    return gather_in_order(acc, feats, len(loader.dataset)), gather_in_order(acc, labels, len(loader.dataset))


def evaluate(trainer: Trainer) -> dict[str, float]:
    """Recall@K and MAP@R (retrieval) or accuracy (classification) on the evaluation split(s); the
    same on every rank."""
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
    acc, model, loader = trainer.accelerator, trainer.model, trainer.eval_loaders["test"]
    was_training = model.training
    model.eval()
    with acc.autocast():
        logits, labels = predict(model, loader, acc.device)
    model.train(was_training)
    n = len(loader.dataset)
    return top_k_accuracy(gather_in_order(acc, logits, n), gather_in_order(acc, labels, n))


def finish(trainer: Trainer, initial: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the final model, write `metrics.json` and the model, print the table (the mode writes
    the plots).

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
        if trainer.selection:
            trainer.rundir.save_metrics(metrics)
            trainer.rundir.drop_checkpoints()
        else:
            save_model(trainer.model, recipe.model, trainer.rundir.path)
            trainer.rundir.save_metrics(metrics)
            print_metrics(metrics)
    return metrics
