"""Iterative pruning with per-cycle LR schedules, SILO's S-shaped max LR among them (method.md 5).

Cycle 0 trains the dense network for train.epochs. Each of the prune.cycles later cycles first removes
prune.rate of the remaining conv/linear weights (globally, `autolr.train.weight_pruning`), optionally rewinds the
survivors to an early checkpoint of cycle 0, and retrains for prune.cycle_epochs with a fresh optimizer
(momentum cleared). prune.lr_schedule sets every cycle's LR, for every param group alike:

- silo: linear warmup to `silo_max_lr(cycle)`, then /10 and /100 at `decay_at` of the cycle;
- warmup: the same shape with the fixed peak prune.max_lr;
- lr_rewind: the last cycle_epochs epochs of cycle 0's schedule, replayed (Renda et al. 2020);
- finetune: prune.finetune_lr, constant;
- oracle: one candidate per max_lr of prune.oracle_grid, each from the same pruned state; the best on
  the validation split is kept. Oracle runs train on the training split minus that validation split
  throughout, and report the test split like every other schedule.

Cycle 0 uses the warmup shape, peaking at prune.max_lr (silo: at silo_max_lr(0) = silo_offset).

The math is in pure functions (`silo_max_lr`, `cycle_factor`, `cycle_lr` in `autolr.train.schedules`);
`run_iterative` is the loop, built from the training loop's setup / train_one_epoch / evaluate. Checkpoints count epochs over all cycles.
A cycle's end (evaluate, log, prune, rewind, clear the optimizer) happens before the checkpoint of its
last epoch, so every checkpoint is either mid-cycle or the start of the next cycle with its masks in
place; an oracle cycle is checkpointed only at its end, and a resume reruns its candidates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from autolr.console import log_epoch, print_metrics
from autolr.data import load_data
from autolr.data.loader import make_loader
from autolr.data.transforms import build_transforms, test_resize
from autolr.errors import AutolrError
from autolr.fileio import atomic_write
from autolr.model import save_model
from autolr.report.summary import write_report
from autolr.rundir import load_shared, main_reads, remove_if_unstarted
from autolr.train import weight_pruning
from autolr.train.loop import Trainer, evaluate, restore_checkpoint, setup, train_one_epoch
from autolr.train.schedules import CycleLR, cycle_at, cycle_epochs, cycle_lr, cycle_start
from autolr.train.snapshots import checkpoint_state, restore, snapshot
from autolr.weights import strip_wrappers

if TYPE_CHECKING:
    from autolr.recipe import PruneConfig, Recipe
    from autolr.rundir import RunDir

log = logging.getLogger("autolr")
REWIND_FILE = "rewind.pt"  # in checkpoints/: the survivors' rewind point, written once in cycle 0


def check_recipe(recipe: Recipe) -> None:
    """Settings that cannot work are errors; settings this mode ignores are said once."""
    p, t = recipe.prune, recipe.train
    later = cycle_epochs(p, t.epochs, 1)
    if p.rewind == "weights" and p.rewind_epoch > t.epochs:
        raise AutolrError(
            f"prune.rewind_epoch = {p.rewind_epoch} is beyond cycle 0, which trains train.epochs = {t.epochs}"
            f" epochs: set it to at most {t.epochs} (0 = the weights before training)"
        )
    if p.lr_schedule == "lr_rewind" and later > t.epochs:
        raise AutolrError(
            f"prune.lr_schedule = 'lr_rewind' replays the last prune.cycle_epochs = {later} epochs of cycle 0,"
            f" which has only train.epochs = {t.epochs}: set prune.cycle_epochs to at most {t.epochs}"
        )
    if t.schedule != "constant":
        log.warning("train.schedule = %r is ignored: with prune.mode = 'iterative', prune.lr_schedule = %r sets"
                    " every cycle's LR", t.schedule, p.lr_schedule)
    shortest = min(t.epochs, later) if p.lr_schedule in ("silo", "warmup", "oracle") else t.epochs  # warmup shapes
    if p.decay_at and p.warmup_epochs > p.decay_at[0] * shortest:
        log.warning("prune.warmup_epochs = %d outlasts the first decay (prune.decay_at = %s of a %d-epoch cycle):"
                    " the LR decays before it reaches its peak", p.warmup_epochs, p.decay_at, shortest)


@dataclass
class _Run:
    """What the cycles share: the recipe as given, the trainer, the pruned weights, the test split."""

    recipe: Recipe
    trainer: Trainer
    targets: list
    test_loaders: dict[str, Any]  # the test split (a plain trainer's own eval loaders; oracle: built apart)
    state: dict[str, Any]  # trainer.extra["silo"], saved in checkpoints: cycle rows, seconds of this cycle
    metric: str = ""

    @property
    def prune(self) -> PruneConfig:
        return self.recipe.prune

    def bounds(self, cycle: int) -> tuple[int, int]:
        """The cycle's first and one-past-last global epoch."""
        start = cycle_start(self.prune, self.recipe.train.epochs, cycle)
        return start, start + cycle_epochs(self.prune, self.recipe.train.epochs, cycle)


def run_iterative(recipe: Recipe, accelerator, rundir: RunDir) -> dict[str, Any]:
    """The whole iterative-pruning run in an open run folder (resumes from its last checkpoint)."""
    try:
        check_recipe(recipe)
        run = _setup(recipe, accelerator, rundir)
        initial = _initial(run)
    except Exception:
        remove_if_unstarted(accelerator, rundir)  # a run that could not start leaves nothing behind
        raise
    trainer, p = run.trainer, recipe.prune
    if p.rewind == "weights" and p.rewind_epoch == 0 and trainer.epoch == 0:
        _save_rewind(run)
    end = cycle_start(p, recipe.train.epochs, p.cycles + 1)
    while trainer.epoch < end:
        _run_cycle(run, cycle_at(p, recipe.train.epochs, trainer.epoch))
    metrics = _finish(run, initial)
    accelerator.free_memory()
    return metrics


def _setup(recipe: Recipe, accelerator, rundir: RunDir) -> _Run:
    """The loop's setup, masks on every conv/linear weight, then the checkpoint (masks included)."""
    oracle = recipe.prune.lr_schedule == "oracle"
    trainer = setup(recipe, accelerator, rundir, selection=oracle, restore=False)
    targets = weight_pruning.prunable(trainer.model)
    if not targets:
        raise AutolrError(f"prune.mode = 'iterative': {recipe.model.name} has no conv or linear weights to prune")
    weight_pruning.reparametrize(targets)
    restore_checkpoint(trainer)
    total = cycle_start(recipe.prune, recipe.train.epochs, recipe.prune.cycles + 1)
    trainer.total_epochs = total  # the progress bar and the log count over all cycles
    state = trainer.extra.setdefault("silo", {"cycles": [], "seconds": 0.0})
    return _Run(recipe, trainer, targets, _test_loaders(trainer) if oracle else trainer.eval_loaders, state)


def _initial(run: _Run) -> dict[str, float]:
    """The test scores before training (saved once, read back on resume); fixes the run's metric."""
    trainer = run.trainer
    initial = main_reads(trainer.accelerator, trainer.rundir.initial_metrics) if trainer.epoch else None
    fresh = initial is None
    initial = _evaluate(trainer, run.test_loaders) if fresh else initial
    run.metric = _metric(run.prune, trainer.task, initial)
    if fresh and trainer.is_main:
        trainer.rundir.save_initial_metrics(initial)
    return initial


def _metric(p: PruneConfig, task: str, scores: dict[str, float]) -> str:
    name = p.metric if p.metric != "auto" else "accuracy" if task == "classification" else "recall@1"
    if name not in scores:
        raise AutolrError(f"prune.metric = {p.metric!r}: this run measures {', '.join(scores)}; pick one"
                          " of them, or 'auto' (accuracy for classification, recall@1 for retrieval)")
    return name


def _run_cycle(run: _Run, cycle: int) -> None:
    """Train the rest of `cycle` (from a resumed epoch, maybe), then end it."""
    p = run.prune
    start, end = run.bounds(cycle)
    if p.lr_schedule == "oracle" and cycle > 0:
        rows, before, max_lr, val = _oracle(run, cycle)
        _end_cycle(run, cycle, rows, before, max_lr, {"val_score": val})
        return
    lr = cycle_lr(p, run.recipe.train.epochs, cycle)
    _use(run.trainer, lr, start)
    for epoch in range(run.trainer.epoch, end):
        before = _before_last(run, epoch, end)
        row = _train_epoch(run, epoch, cycle)
        if p.rewind == "weights" and cycle == 0 and epoch + 1 == p.rewind_epoch:
            _save_rewind(run)
        if epoch + 1 < end:
            _commit(run, [row])
        else:
            _end_cycle(run, cycle, [row], before, lr.max_lr)


def _oracle(run: _Run, cycle: int) -> tuple[list[dict], list | None, float, float]:
    """One candidate per max_lr of the grid, each from the same pruned state, the same data order and
    the same RNG; the best on the validation split goes on. Returns its epoch rows and the candidate
    rows, its pre-last-epoch weights (movement), its max_lr and validation score."""
    trainer, p = run.trainer, run.prune
    start, end = run.bounds(cycle)
    origin = snapshot(trainer)
    candidates, best = [], None
    for index, max_lr in enumerate(p.oracle_grid):
        restore(trainer, origin)
        trainer.epoch = start
        _use(trainer, cycle_lr(p, run.recipe.train.epochs, cycle, oracle_lr=max_lr), start)
        rows, before = [], None
        for epoch in range(start, end):
            before = _before_last(run, epoch, end) or before
            rows.append(_train_epoch(run, epoch, cycle))
        score = evaluate(trainer)[run.metric]  # the validation split
        log.info("cycle %d, oracle max_lr %g: validation %s %.4f", cycle, max_lr, run.metric, score)
        candidates.append({"epoch": end, "kind": "oracle_candidate", "cycle": cycle, "max_lr": max_lr,
                           "score": score, "loss": rows[-1]["loss"], "seconds": sum(r["seconds"] for r in rows)})
        if best is None or score > best[0]:  # the first of equal scores
            best = (score, index, snapshot(trainer), rows, before)
    score, chosen, kept, rows, before = best
    restore(trainer, kept)
    for index, c in enumerate(candidates):
        c["chosen"] = index == chosen
    return [*rows, *candidates], before, p.oracle_grid[chosen], score


def _use(trainer: Trainer, lr: CycleLR, start: int) -> None:
    """Every param group follows the cycle's LR (SILO trains with one LR; train.lr/head_lr are not used)."""
    for g in trainer.optimizer.param_groups:
        g["base_lr"] = lr.base
    trainer.lr_fn = lambda epoch, step, steps: lr.factor(epoch - start, step, steps)


def _before_last(run: _Run, epoch: int, end: int) -> list | None:
    """The weights before a cycle's last epoch, which the movement criterion compares with its end."""
    return weight_pruning.weights(run.targets) if run.prune.criterion == "movement" and epoch == end - 1 else None


def _train_epoch(run: _Run, epoch: int, cycle: int) -> dict[str, Any]:
    trainer = run.trainer
    stats = train_one_epoch(trainer, epoch)
    trainer.epoch = epoch + 1
    run.state["seconds"] += stats["seconds"]
    row = {"epoch": epoch + 1, "kind": "epoch", "cycle": cycle, **stats}
    log_epoch(row, trainer.total_epochs, trainer.task)
    return row


def _end_cycle(run: _Run, cycle: int, rows: list[dict], before: list | None, max_lr: float,
               extra: dict[str, Any] | None = None) -> None:
    """Score the cycle on the test split, then (unless it is the last) prune, rewind and clear the
    optimizer for the next one; the checkpoint that follows holds all of it."""
    trainer, p = run.trainer, run.prune
    scores = _evaluate(trainer, run.test_loaders)
    left = weight_pruning.remaining(run.targets)
    row = {
        "epoch": trainer.epoch, "kind": "cycle", "cycle": cycle, "remaining": round(left, 6),
        "sparsity": round(1 - left, 6), "max_lr": max_lr, "metric": run.metric, "score": scores[run.metric],
        "lr_schedule": p.lr_schedule, **(extra or {}), "seconds": round(run.state["seconds"], 3), "test": scores,
    }
    log.info("cycle %d/%d: %.1f%% of the prunable weights left, max LR %.4g, test %s %.4f", cycle, p.cycles,
             100 * left, max_lr, run.metric, scores[run.metric])
    run.state["cycles"].append(row)
    run.state["seconds"] = 0.0
    if cycle < p.cycles:
        scores_of = weight_pruning.movement_scores(run.targets, before) if p.criterion == "movement" else \
            weight_pruning.magnitude_scores(run.targets)
        weight_pruning.prune_global(run.targets, p.rate, scores_of)
        if p.rewind == "weights":
            _rewind(run)
        trainer.optimizer.state.clear()  # a fresh SGD each cycle (momentum buffers cleared)
    _commit(run, [*rows, row])


def _commit(run: _Run, rows: list[dict]) -> None:
    """Log the rows, then checkpoint: a checkpoint never precedes the rows of its epochs."""
    trainer = run.trainer
    if trainer.is_main:
        for row in rows:
            trainer.rundir.log(row)
        trainer.rundir.save_checkpoint(checkpoint_state(trainer), keep=run.recipe.train.keep_checkpoints)
    for row in rows:
        if row["kind"] in ("epoch", "cycle"):
            numbers = {f"{row['kind']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}
            trainer.accelerator.log(numbers, step=row["epoch"])
    trainer.accelerator.wait_for_everyone()


def _save_rewind(run: _Run) -> None:
    """Keep the current weights and buffers (not the masks) as the survivors' rewind point."""
    trainer = run.trainer
    if trainer.is_main:
        state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items() if not k.endswith("_mask")}
        atomic_write(trainer.rundir.checkpoints / REWIND_FILE, lambda path: torch.save(state, path))
    trainer.accelerator.wait_for_everyone()


def _rewind(run: _Run) -> None:
    """Survivors (and norm buffers, head) back to the rewind point; the masks stay, pruned entries zero."""
    trainer = run.trainer
    saved = strip_wrappers(load_shared(trainer.accelerator, trainer.rundir.checkpoints / REWIND_FILE))
    with torch.no_grad():
        for key, value in trainer.model.state_dict().items():
            if key in saved:
                value.copy_(saved[key])
        for module, name in run.targets:
            getattr(module, f"{name}_orig").mul_(getattr(module, f"{name}_mask"))


def _evaluate(trainer: Trainer, loaders: dict[str, Any]) -> dict[str, float]:
    """The loop's `evaluate` on other loaders (an oracle run's test split; its own are the validation split)."""
    own, trainer.eval_loaders = trainer.eval_loaders, loaders
    try:
        return evaluate(trainer)
    finally:
        trainer.eval_loaders = own


def _test_loaders(trainer: Trainer) -> dict[str, Any]:
    """The test split's loaders, for a trainer set up on the validation split (oracle runs)."""
    recipe, acc = trainer.recipe, trainer.accelerator
    _, test_tf, size = build_transforms(recipe.data, trainer.model.backbone.pretrained_cfg)
    with acc.local_main_process_first():  # a first load may write a cache: once per node
        data = load_data(recipe.data, seed=recipe.train.seed, min_side=test_resize(size))
    return {
        name: make_loader(split, test_tf, batch_size=recipe.eval.batch_size, workers=recipe.data.workers,
                          seed=recipe.train.seed, train=False, rank=acc.process_index, world=acc.num_processes,
                          pin_memory=acc.device.type == "cuda")
        for name, split in data.eval_splits().items()
    }


def _finish(run: _Run, initial: dict[str, float]) -> dict[str, Any]:
    """metrics.json (the last cycle's test scores and every cycle's row) and the model, masks folded in."""
    trainer, recipe, last = run.trainer, run.recipe, run.state["cycles"][-1]
    metrics = {
        **last["test"],
        "initial": initial,
        "split": "test",
        "dataset": recipe.data.name,
        "model": recipe.model.name,
        "drop_top": recipe.model.drop_top,
        "epochs": recipe.train.epochs,  # per cycle, as in every run's metrics
        "total_epochs": trainer.epoch,
        "prune.mode": "iterative",
        "prune.lr_schedule": recipe.prune.lr_schedule,
        "prune.criterion": recipe.prune.criterion,
        "prune.rewind": recipe.prune.rewind,
        "metric": run.metric,
        "remaining": last["remaining"],
        "sparsity": last["sparsity"],
        "cycles": run.state["cycles"],
        "wall_time": round(trainer.rundir.wall_time(), 2),
    }
    weight_pruning.fold(run.targets)  # plain `weight` tensors, pruned entries exactly zero
    if trainer.is_main:
        save_model(trainer.model, recipe.model, trainer.rundir.path)
        trainer.rundir.save_metrics(metrics)
        print_metrics(metrics)
        write_report(trainer.rundir.path)  # the per-cycle plot among them; a failing plot is a warning
    return metrics
