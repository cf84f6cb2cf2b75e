"""Baseline learning-rate schedules as pure functions of time, applied to every param group alike.

Each group carries its own `base_lr` (stem and blocks: train.lr, head: train.head_lr; AutoLR and
layer decay rewrite the blocks'); a schedule gives one factor per step and every group's
`lr = base_lr * factor`. So all groups keep their proportions, a resumed run gets the exact LRs back
from (epoch, step) alone, and AutoLR's step decay composes with its own per-block LRs.
For cyclic/sgdr/cosine the factor runs between lr_min / lr and 1. `tests/test_schedules.py` checks
each curve against torch's own scheduler.
"""

from __future__ import annotations

import math
from typing import Any, Protocol


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
