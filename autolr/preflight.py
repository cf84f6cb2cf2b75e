"""Every check a recipe must pass before training, without weights or images: `autolr validate` runs it,
and `autolr run` runs the same function, so a recipe that validates does not fail before its first epoch.

Cheap and side-effect free: the network is built on the meta device (no memory, no init cost), weights
are never downloaded and the dataset is only looked for, never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn

    from autolr.recipe import Recipe

MIN_AUTOLR_BLOCKS = 2  # AutoLR sorts blocks by their weight variation: one block has no order


def check(recipe: Recipe, *, data: bool = True) -> None:
    """Raise AutolrError for the first problem `autolr run` would meet before training.

    Checks, in order: third-party adapters import (entry points), `model.checkpoint` exists,
    `model.name` is a timm model (and its tag a pretrained tag) that can be built for `data.image_size`,
    `model.drop_top` / `prune.max_depth` fit the model's block count, and
    (unless `data=False`, for a recipe meant for another machine) the dataset's source is present.
    """
    from autolr.adapters import load_plugins

    load_plugins()
    _check_checkpoint(recipe.model.checkpoint)
    _check_depths(recipe, num_blocks(recipe.model.name, recipe.data.image_size))
    if data:
        from autolr.data import check_source

        check_source(recipe.data)  # list files only, never an image; a hub id is not looked up


def num_blocks(name: str, image_size: int | str = "auto") -> int:
    """How many blocks the model's adapter sees, on a network built without weights."""
    from autolr.adapters import get_adapter

    return len(get_adapter(name).block_map(_skeleton(name, image_size)).blocks)


def _skeleton(name: str, image_size: int | str) -> nn.Module:
    """The architecture as the run builds it (name, tag, fixed input size), without weights: on the meta
    device (instant); on the CPU where that fails, so that an error is the run's own."""
    import torch

    from autolr.recipe import ModelConfig
    from autolr.weights import create_timm_model

    cfg = ModelConfig(name=name, pretrained=False)
    try:
        with torch.device("meta"):
            return create_timm_model(cfg, image_size)
    except Exception:  # an init or shape probe that reads tensor values: build it for real
        return create_timm_model(cfg, image_size)


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint and not Path(checkpoint).expanduser().exists():
        raise AutolrError(f"model.checkpoint = {checkpoint!r}: no such file or folder; give a .safetensors/.pth"
                          " file or a run folder, or set model.checkpoint = '' for the hub weights")


def _check_depths(recipe: Recipe, blocks: int) -> None:
    from autolr.adapters.surgery import check_depth

    name, prune = recipe.model.name, recipe.prune
    if prune.mode == "search":
        deepest = blocks - MIN_AUTOLR_BLOCKS
        if prune.max_depth > deepest:
            raise AutolrError(
                f"prune.max_depth = {prune.max_depth}: {name} has {blocks} blocks and at least 2 must stay,"
                f" so the deepest cut is {deepest}: lower prune.max_depth (0 = the deepest)")
        return  # the search chooses drop_top itself
    check_depth(name, blocks, recipe.model.drop_top)
    kept = blocks - recipe.model.drop_top
    if recipe.train.schedule == "autolr" and prune.mode != "iterative" and kept < MIN_AUTOLR_BLOCKS:
        raise AutolrError(
            f"train.schedule = 'autolr' needs at least 2 blocks; {name} has {kept} after model.drop_top ="
            f" {recipe.model.drop_top}: lower drop_top or pick another schedule")

