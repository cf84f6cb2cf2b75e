"""AutoLR (Ro & Choi, AAAI 2021; method.md section 3): its math as small pure functions, then
Algorithm 2 itself, `autolr_epoch`, which the loop runs as the epoch when train.schedule = "autolr".

The pure functions never touch a model; `autolr_epoch` and the helpers below it work on a `Trainer`
(its optimizer's block groups, its model, its run folder's log). Indices in comments are 1-based like
the paper; the code is 0-based.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from autolr.errors import AutolrError
from autolr.train.accel import broadcast_from_main
from autolr.train.optim import reset_state
from autolr.train.snapshots import restore, snapshot

if TYPE_CHECKING:
    from autolr.train.loop import Trainer

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


def autolr_epoch(trainer: Trainer, epoch: int, train_epoch: Callable[[Trainer, int], dict[str, Any]]) -> dict[str, Any]:
    """Algorithm 2: run the epoch as trials until the blocks' weight variations are sorted enough.

    Each rejected trial sets targets (once per epoch), renews every block's LR and restarts the epoch
    from its snapshot with the same data order, augmentation and dropout masks. After `max_trials` the
    best-scoring trial is kept. A renewal that leaves every LR as it was (every block clamped, say)
    ends the epoch: the next trial would replay this one exactly. Every trial is a row in `log.jsonl`;
    the epoch's row counts the seconds and images of all its trials (what the epoch cost), not only
    the kept one's. `train_epoch(trainer, epoch)` is one pass (the loop's `train_one_epoch`).
    """
    cfg, state = trainer.recipe.autolr, trainer.extra["autolr"]
    start = snapshot(trainer)
    before = block_weights_in(trainer, start["model"])  # epoch-start weights: views into the snapshot
    targets, best, ran, stop = None, None, [], "max_trials"
    for trial in range(1, cfg.max_trials + 1):
        set_base_lrs(trainer, state["lrs"])
        if cfg.reset_momentum:  # all the optimizer keeps: momentum, Adam's moments, step counters
            reset_state(trainer.optimizer)
        stats = train_epoch(trainer, epoch)
        ran.append(stats)
        v = broadcast_from_main(trainer.accelerator, measure_variation(trainer, before))  # rank 0's v: every rank decides alike
        score = sorting_quality(v)
        accepted = accept(score, state["tau"], cfg.strict)
        _log_trial(trainer, epoch, trial, v, targets, score, accepted, stats)
        if accepted:
            stop = "accepted"
            break
        last = trial == cfg.max_trials
        if best is None or score > best[0]:  # a later trial may do worse: keep this one's end state
            best = (score, trial, list(state["lrs"]), None if last else snapshot(trainer), stats, v)
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
        restore(trainer, start)
    if not accepted:
        if best[1] != trial:
            restore(trainer, best[3])
            state["lrs"], stats, v = best[2], best[4], best[5]
        log.info("epoch %d: no trial reached S >= %.3f in %d trial(s); kept trial %d (S = %.3f)",
                 epoch + 1, state["tau"], trial, best[1], best[0])
    state["tau"] = relax_tau(state["tau"], cfg.strict)
    set_base_lrs(trainer, state["lrs"])
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


def block_groups(trainer: Trainer) -> list[dict]:
    return [g for g in trainer.optimizer.param_groups if g["name"].startswith("block")]


def block_weights(trainer: Trainer) -> list[list[torch.Tensor]]:
    """Each block's conv and linear weights (ndim >= 2); norms and biases do not count (method.md 3.1)."""
    return [[p for p in g["params"] if p.dim() >= 2] for g in block_groups(trainer)]


def block_weights_in(trainer: Trainer, state: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
    """The blocks' conv/linear weights as found in a (snapshot) state dict of the bare model."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return [[state[names[id(w)]] for w in ws] for ws in block_weights(trainer)]


def measure_variation(trainer: Trainer, before: list[list[torch.Tensor]]) -> list[float]:
    return weight_variation(before, [[w.detach() for w in ws] for ws in block_weights(trainer)])


def set_base_lrs(trainer: Trainer, lrs: list[float]) -> None:
    """Blocks take AutoLR's LRs; the stem `stem_scale` x block 1's; the neck follows the top block."""
    cfg = trainer.recipe.autolr
    for g, lr in zip(block_groups(trainer), lrs, strict=True):
        g["base_lr"] = lr
    for g in trainer.optimizer.param_groups:
        if g["name"] == "stem":
            g["base_lr"] = cfg.stem_scale * lrs[0]
        elif g["name"] == "neck":
            g["base_lr"] = lrs[-1]
        elif g["name"] == "head" and not cfg.hold_head:
            g["base_lr"] = lrs[-1] * trainer.recipe.train.head_lr / trainer.recipe.train.lr


def _log_trial(trainer, epoch, trial, v, targets, score, accepted, stats) -> None:
    """One trial: its v, targets and S, and the block LRs it actually used (AutoLR's own LRs times the
    step decay, `base_lrs` before it), its seconds and images."""
    state = trainer.extra["autolr"]
    row = {
        "epoch": epoch + 1, "kind": "trial", "trial": trial, "v": v, "target": targets,
        "lrs": [g["lr"] for g in block_groups(trainer)], "base_lrs": list(state["lrs"]),
        "sorting_quality": round(score, 6), "tau": state["tau"], "accepted": accepted, "loss": stats["loss"],
        "seconds": stats["seconds"], "images": _images(trainer, stats),
    }
    if trainer.is_main:
        trainer.rundir.log(row)
    log.info("epoch %d trial %d: S = %.4f (tau %.3f) %s, loss %.4f", epoch + 1, trial, score, state["tau"],
             "accepted" if accepted else "rejected", stats["loss"])


def check_blocks(trainer: Trainer) -> None:
    if trainer.recipe.train.schedule == "autolr" and trainer.recipe.prune.mode != "iterative" and len(block_groups(trainer)) < 2:
        raise AutolrError(
            f"train.schedule = 'autolr' needs at least 2 blocks; {trainer.recipe.model.name} has"
            f" {len(block_groups(trainer))} after model.drop_top = {trainer.recipe.model.drop_top}: lower"
            " drop_top or pick another schedule"
        )


def init_state(trainer: Trainer) -> None:
    """AutoLR's state in `trainer.extra` (saved in checkpoints): every block's LR, train.lr at the start,
    the checkpoint's after a resume, clamped to [autolr.min_lr, autolr.max_lr] so that a lowered max_lr
    takes effect; and tau. The blocks' base LRs follow."""
    cfg, t = trainer.recipe.autolr, trainer.recipe.train
    state = trainer.extra.setdefault("autolr", {"lrs": [t.lr] * len(block_groups(trainer)), "tau": cfg.tau})
    state["lrs"] = [min(max(lr, cfg.min_lr), cfg.max_lr) for lr in state["lrs"]]
    set_base_lrs(trainer, state["lrs"])
