"""Baseline learning-rate schedules as pure functions of time, applied to every param group alike.

Each group carries its own `base_lr` (stem and blocks: train.lr, head: train.head_lr; AutoLR and
layer decay rewrite the blocks'); a schedule gives one factor per step and every group's
`lr = base_lr * factor`. So all groups keep their proportions, a resumed run gets the exact LRs back
from (epoch, step) alone, and AutoLR's step decay composes with its own per-block LRs.
For cyclic/sgdr/cosine the factor runs between lr_min / lr and 1. `tests/test_schedules.py` checks
each curve against torch's own scheduler.

Iterative pruning's per-cycle schedules (method.md 5) are here too: SILO's S-shaped peak
(`silo_max_lr`), the warmup-and-decay shape of a cycle (`cycle_factor`), where cycles start and end,
and `cycle_lr`, a cycle's LR under prune.lr_schedule (`autolr.modes.iterative` runs the cycles).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from autolr.recipe import PruneConfig


class _TrainKeys(Protocol):
    schedule: str
    epochs: int
    lr: float
    lr_min: float
    milestones: list[int]
    gamma: float
    cycles: int
    restarts: int
    warmup_epochs: int


def lr_factor(t: _TrainKeys, *, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The schedule's multiplier at `step` (0-based) of `epoch` (0-based)."""
    now = epoch + step / max(steps_per_epoch, 1)  # fractional epochs
    warm = t.warmup_epochs if t.schedule != "autolr" else 0
    if now < warm:
        return (epoch * steps_per_epoch + step + 1) / (warm * steps_per_epoch)  # linear, reaches 1
    if t.schedule in ("constant", "layer_decay"):
        return 1.0
    if t.schedule in ("step", "multistep", "autolr"):
        return t.gamma ** sum(1 for m in t.milestones if m <= epoch)
    low = _min_factor(t)
    span = max(t.epochs - warm, 1e-9)
    if t.schedule == "cosine":
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min((now - warm) / span, 1.0)))
    if t.schedule == "sgdr":
        period = span / (t.restarts + 1)  # restarts + 1 equal cosine cycles fill the run (T_mult = 1)
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * ((now - warm) % period) / period))
    if t.schedule == "cyclic":
        period = span / t.cycles  # triangular (Smith 2017): up from lr_min to lr, then back down
        x = ((now - warm) % period) / (period / 2)
        return low + (1 - low) * (1 - abs(x - 1))
    raise ValueError(f"train.schedule = {t.schedule!r} is not a schedule")


def _min_factor(t: _TrainKeys) -> float:
    if t.lr_min > t.lr:
        raise ValueError(f"train.lr_min = {t.lr_min} is above train.lr = {t.lr}: lr is the maximum; lower lr_min")
    return t.lr_min / t.lr


def apply_lrs(optimizer: Any, factor: float) -> None:
    """Every group's `lr` = its `base_lr` x factor (written into the group directly)."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def layer_decay_scales(num_blocks: int, decay: float) -> list[float]:
    """LLRD scales for [stem, block 1..K, head]: decay ** (depth from the top), as timm's
    `param_groups_layer_decay` (layer 0 the stem, layer K + 1 the head at scale 1)."""
    layers = num_blocks + 2
    return [decay ** (layers - 1 - i) for i in range(layers)]


def silo_max_lr(cycle: int, rate: float = 0.2, offset: float = 0.03, a: float = 0.04, b: float = 5.0,
                delay: int = 1) -> float:
    """SILO's peak LR of a cycle: `offset` up to cycle `delay`, then an S-curve rising to `offset + a`.

    x = 1 - (1 - rate)^(cycle - delay) is the pruned fraction lagged by `delay` cycles, and the curve is
    x^b / (x^b + (1 - x)^b), centred at x = 0.5. Defaults: the authors' ResNet-20 values.
    """
    if cycle <= delay:
        return offset
    x = 1 - (1 - rate) ** (cycle - delay)
    return offset + a * x**b / (x**b + (1 - x) ** b)


def cycle_factor(epoch: int, step: int, steps: int, *, epochs: int, warmup: int, decay_at: list[float]) -> float:
    """The cycle's LR shape at `step` of `epoch` (both 0-based, within the cycle) as a fraction of its peak.

    A linear ramp reaching 1 after `warmup` epochs (the first step already above 0), times 1/10 for each
    fraction f of `decay_at` with epoch + step/steps >= f x epochs.
    """
    ramp = min(1.0, (epoch * steps + step + 1) / (warmup * steps)) if warmup else 1.0
    now = epoch + step / steps
    return ramp * 0.1 ** sum(1 for f in decay_at if now >= f * epochs)


def cycle_epochs(p: PruneConfig, train_epochs: int, cycle: int) -> int:
    """Cycle 0 trains train.epochs; later cycles prune.cycle_epochs (0: train.epochs as well)."""
    return train_epochs if cycle == 0 else p.cycle_epochs or train_epochs


def cycle_start(p: PruneConfig, train_epochs: int, cycle: int) -> int:
    """The global epoch (0-based) at which `cycle` starts; cycle_start(cycles + 1) is the run's length."""
    return 0 if cycle == 0 else train_epochs + (cycle - 1) * cycle_epochs(p, train_epochs, 1)


def cycle_at(p: PruneConfig, train_epochs: int, epoch: int) -> int:
    """The cycle that global epoch `epoch` (0-based) belongs to."""
    return 0 if epoch < train_epochs else 1 + (epoch - train_epochs) // cycle_epochs(p, train_epochs, 1)


@dataclass(frozen=True)
class CycleLR:
    base: float  # every group's base_lr
    factor: Callable[[int, int, int], float]  # (epoch in the cycle, step, steps per epoch) -> x base
    max_lr: float  # the highest LR the cycle reaches (reported)


def cycle_lr(p: PruneConfig, train_epochs: int, cycle: int, oracle_lr: float | None = None) -> CycleLR:
    """Cycle `cycle`'s LR under prune.lr_schedule (`oracle_lr`: the oracle candidate's peak)."""
    shape = partial(cycle_factor, warmup=p.warmup_epochs, decay_at=p.decay_at)
    epochs = cycle_epochs(p, train_epochs, cycle)
    if p.lr_schedule == "silo":
        peak = silo_max_lr(cycle, p.rate, p.silo_offset, p.silo_a, p.silo_b, p.silo_delay)
        return CycleLR(peak, partial(shape, epochs=epochs), peak)
    if cycle == 0 or p.lr_schedule == "warmup":
        return CycleLR(p.max_lr, partial(shape, epochs=epochs), p.max_lr)
    if p.lr_schedule == "oracle":
        return CycleLR(oracle_lr, partial(shape, epochs=epochs), oracle_lr)
    if p.lr_schedule == "finetune":
        return CycleLR(p.finetune_lr, lambda e, s, n: 1.0, p.finetune_lr)
    skip = train_epochs - epochs  # lr_rewind: cycle 0's last `epochs` epochs
    highest = shape(max(skip, p.warmup_epochs), 0, 1, epochs=train_epochs)  # where the replayed window peaks
    return CycleLR(p.max_lr, lambda e, s, n: shape(skip + e, s, n, epochs=train_epochs), p.max_lr * highest)
