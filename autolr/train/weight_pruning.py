"""Global unstructured pruning of conv and linear weights with `torch.nn.utils.prune` (method.md 5).

Every prunable weight carries torch's reparametrisation from the start (`weight_orig` x `weight_mask`,
applied by a forward pre-hook), so checkpoints always hold the masks and a resumed run loads them like
any other buffer. After each pruning step the mask is folded into `weight_orig` and the hook is reset to
a plain identity: pruned entries are then exactly zero in `weight_orig` too (they receive no gradient,
and weight decay of zero is zero), and no per-cycle copy of the mask accumulates in torch's
`PruningContainer`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

Target = tuple[nn.Module, str]


def prunable(model: nn.Module) -> list[Target]:
    """(module, "weight") for every convolution and linear layer, in module order."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def reparametrize(targets: list[Target]) -> None:
    """Give each weight an all-ones mask (identity pruning), unless it already has one."""
    for module, name in targets:
        if not hasattr(module, f"{name}_mask"):
            prune.identity(module, name)


def weights(targets: list[Target]) -> list[torch.Tensor]:
    """The effective weights `weight_orig * weight_mask`, as of now.

    `module.weight` itself is recomputed only by the next forward pass, so after an optimizer step it is
    stale: never score or export it directly.
    """
    return [(getattr(m, f"{n}_orig") * getattr(m, f"{n}_mask")).detach() for m, n in targets]


def masks(targets: list[Target]) -> list[torch.Tensor]:
    return [getattr(m, f"{n}_mask") for m, n in targets]


def remaining(targets: list[Target]) -> float:
    """The fraction of prunable weights still unmasked."""
    ms = masks(targets)
    return float(sum(m.sum().item() for m in ms) / sum(m.numel() for m in ms))


def magnitude_scores(targets: list[Target]) -> dict[Target, torch.Tensor]:
    """|w|: the global magnitude criterion (L1Unstructured drops the smallest)."""
    return {t: w.abs() for t, w in zip(targets, weights(targets), strict=True)}


def movement_scores(targets: list[Target], before: list[torch.Tensor]) -> dict[Target, torch.Tensor]:
    """|w_T - w_(T-1)|: how far each weight moved over the last epoch; the least moved are dropped."""
    return {t: (w - b).abs() for t, w, b in zip(targets, weights(targets), before, strict=True)}


@torch.no_grad()
def prune_global(targets: list[Target], amount: float, scores: dict[Target, torch.Tensor]) -> None:
    """Remove `amount` of the still unpruned weights, globally, lowest score first.

    torch's `PruningContainer` applies the amount to the entries the current masks keep, so each call
    removes a fraction of what remains: 0.8^k stays after k calls with amount 0.2 (up to rounding).
    """
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=amount)
    for module, name in targets:
        mask = getattr(module, f"{name}_mask").clone()
        prune.remove(module, name)  # weight_orig <- weight_orig * mask, the same Parameter object
        prune.identity(module, name)
        getattr(module, f"{name}_mask").copy_(mask)
        setattr(module, name, getattr(module, f"{name}_orig") * mask)


def fold(targets: list[Target]) -> None:
    """Make the pruning permanent: plain `weight` parameters with the pruned entries at zero (export)."""
    for module, name in targets:
        prune.remove(module, name)
