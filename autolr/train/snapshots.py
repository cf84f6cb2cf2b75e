"""A trainer's whole state, in memory and on disk: `snapshot`/`restore` (on the training device, for
AutoLR's trials and the oracle's candidates) and the checkpoint's contents (`checkpoint_state`,
`apply_checkpoint`); the run folder only stores and loads them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from autolr.train.loop import Trainer


def snapshot(trainer: Trainer) -> dict[str, Any]:
    """Weights, norm buffers, optimizer state and RNG, cloned on the training device (no host copy)."""
    from autolr.train.optim import snapshot_state

    scaler = trainer.accelerator.scaler  # fp16 only: its loss scale is part of the state a trial starts from
    return {
        "model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": snapshot_state(trainer.optimizer),  # with group step counters and Lookahead's slow weights
        "rng": rng_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }


def restore(trainer: Trainer, snap: dict[str, Any]) -> None:
    with torch.no_grad():
        for k, v in trainer.model.state_dict().items():
            v.copy_(snap["model"][k])
    from autolr.train.optim import restore_state

    restore_state(trainer.optimizer, snap["optimizer"])
    set_rng_state(snap["rng"])
    if snap["scaler"] is not None:
        trainer.accelerator.scaler.load_state_dict(snap["scaler"])


def rng_state() -> dict[str, Any]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    """What `checkpoints/epoch-NNNN.pt` holds: model, optimizer (with every group's LRs), RNG, loop state."""
    scaler = trainer.accelerator.scaler
    return {
        "epoch": trainer.epoch,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "extra": trainer.extra,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }


def apply_checkpoint(trainer: Trainer, state: dict[str, Any]) -> None:
    """Continue from a loaded checkpoint: weights, optimizer, RNG, the loop's state and epoch."""
    from autolr.weights import strip_wrappers

    trainer.model.load_state_dict(strip_wrappers(state["model"]))  # runs saved before the unwrap fix
    trainer.optimizer.load_state_dict(state["optimizer"])  # moves the state onto the parameters' device
    torch.set_rng_state(state["rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    trainer.extra.update(state["extra"])
    if state.get("scaler") and trainer.accelerator.scaler is not None:
        trainer.accelerator.scaler.load_state_dict(state["scaler"])
    trainer.epoch = state["epoch"]
