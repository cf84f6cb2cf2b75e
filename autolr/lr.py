"""AutoLR's math (Ro & Choi, AAAI 2021; method.md section 3) as small pure functions.

The training loop (`autolr.engine.autolr_epoch`) calls them once per trial; they never touch a model.
Indices in comments are 1-based like the paper; the code is 0-based.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

log = logging.getLogger("autolr")

# Targets are floored here: the repair cascade can go below zero, and the reference code then sets
# negative learning rates. A target must stay a (tiny) positive weight variation.
TARGET_FLOOR = 1e-12


def weight_variation(before: Sequence[Sequence[torch.Tensor]], after: Sequence[Sequence[torch.Tensor]]) -> list[float]:
    """Per block: ||W(t) - W(t-1)||_2 / n over the block's weight tensors together (eq. 12).

    The divisor is the element count n, not its square root, as in the paper and the reference code.
    The caller passes only conv/linear weights (ndim >= 2). One host transfer for all blocks.
    """
    return block_variations(before, after).double().tolist()


def block_variations(before: Sequence[Sequence[torch.Tensor]], after: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """`weight_variation` as one tensor on the weights' device (no host transfer).

    A block without conv/linear weights (only norms) has v = 0, made on the same device as the other
    blocks' weights: a CPU scalar would not stack with CUDA tensors.
    """
    first = next((x for b in before for x in b), None)
    zero = torch.zeros((), dtype=torch.float32, device=first.device if first is not None else None)
    values = []
    for b, a in zip(before, after, strict=True):
        sq = sum((((x.float() - y.float()) ** 2).sum() for x, y in zip(b, a, strict=True)), zero)
        values.append(sq.sqrt() / max(sum(x.numel() for x in b), 1))
    return torch.stack(values) if values else zero.new_zeros(0)


def sorting_quality(v: Sequence[float]) -> float:
    """S = 1 - (2 / K^2) * sum_k |k - rank(v_k)| (eq. 13); 1 when v is ascending. Ties keep index order."""
    k = len(v)
    if k == 0:
        return 1.0
    order = sorted(range(k), key=lambda i: (v[i], i))  # stable ascending
    rank = {block: r for r, block in enumerate(order)}
    return 1.0 - 2.0 / k**2 * sum(abs(i - rank[i]) for i in range(k))


def initial_targets(v: Sequence[float], alpha: float = 2.0, beta: float = 0.4) -> list[float]:
    """The first epoch's ramp from alpha * min(v) to beta * max(v) (eq. 14).

    When beta * max(v) <= alpha * min(v) the ramp would not ascend: say so and repair instead.
    """
    k = len(v)
    if k == 1:
        return _floor(list(v))
    lo, hi = alpha * min(v), beta * max(v)
    if hi <= lo:
        log.warning(
            "AutoLR: the first-epoch ramp does not ascend (beta * max(v) = %.3g <= alpha * min(v) = %.3g);"
            " using the repair rule instead", hi, lo,
        )
        return repair_targets(v)
    step = (hi - lo) / (k - 1)
    return _floor([lo + i * step for i in range(k)])


def repair_targets(v: Sequence[float]) -> list[float]:
    """Later epochs: raise blocks above the centre, lower blocks below it, until v ascends.

    Centre c = floor(K/2) + 1 (1-based). Above it, a block slower than the one below becomes that one
    + d; below it, a block faster than the one above becomes that one - d; sequential, so corrections
    cascade. d = (max - min) / (K - 1). Floored above zero.
    """
    k = len(v)
    target = list(v)
    if k < 2:
        return _floor(target)
    d = (max(v) - min(v)) / (k - 1)
    c = k // 2  # 0-based index of the centre block floor(K/2) + 1
    for i in range(c + 1, k):
        if target[i - 1] > target[i]:
            target[i] = target[i - 1] + d
    for i in range(c - 1, -1, -1):
        if target[i + 1] < target[i]:
            target[i] = target[i + 1] - d
    return _floor(target)


def _floor(values: list[float]) -> list[float]:
    return [max(x, TARGET_FLOOR) for x in values]


def renew_lrs(
    lrs: Sequence[float], v: Sequence[float], targets: Sequence[float], min_lr: float = 1e-6, max_lr: float = 0.1
) -> list[float]:
    """eta_k <- eta_k * vbar_k / v_k (eq. 15/16), clamped to [min_lr, max_lr]; every clamp is logged.

    A block that did not move (v = 0: frozen or dead) keeps its LR, and the log says so.
    """
    out = []
    for i, (lr, vi, ti) in enumerate(zip(lrs, v, targets, strict=True)):
        if vi == 0:
            log.info("AutoLR: block %d did not move (v = 0); its LR stays %.3g", i + 1, lr)
            out.append(lr)
            continue
        wanted = lr * ti / vi
        clamped = min(max(wanted, min_lr), max_lr)
        if clamped != wanted:
            log.info("AutoLR: block %d LR %.3g clamped to %.3g", i + 1, wanted, clamped)
        out.append(clamped)
    return out


def accept(score: float, tau: float, strict: bool = False) -> bool:
    """strict: the paper's S > tau. Otherwise the reference code's round(S, 3) >= tau."""
    return score > tau if strict else round(score, 3) >= tau


def relax_tau(tau: float, strict: bool = False) -> float:
    """After each epoch the reference code relaxes tau to 0.99 * tau while tau > 0.8; strict never does."""
    return tau * 0.99 if not strict and tau > 0.8 else tau
