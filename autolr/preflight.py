"""Every check a recipe must pass before training, without weights or images: `autolr validate` runs it,
and `autolr run` runs the same function, so a recipe that validates does not fail before its first epoch.

Cheap and side-effect free: the network is built on the meta device (no memory, no init cost), weights
are never downloaded and the dataset is only looked for, never read.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn

    from autolr.recipe import Recipe

MIN_AUTOLR_BLOCKS = 2  # AutoLR sorts blocks by their weight variation: one block has no order


def check(recipe: Recipe, *, data: bool = True) -> None:
    """Raise AutolrError for the first problem `autolr run` would meet before training.

    Checks, in order: third-party adapters import (entry points), `model.name` is a timm model,
    `model.checkpoint` exists, `model.drop_top` / `prune.max_depth` fit the model's block count, and
    (unless `data=False`, for a recipe meant for another machine) the dataset's source is present.
    """
    from autolr.adapters import load_plugins

    load_plugins()
    check_model_name(recipe.model.name)
    _check_checkpoint(recipe.model.checkpoint)
    _check_depths(recipe, num_blocks(recipe.model.name))
    if data:
        _check_data(recipe)


def check_model_name(name: str) -> None:
    """`name` (with or without a pretrained tag) is a timm model, else an error with close names."""
    import timm

    base, _, tag = name.partition(".")
    if timm.is_model(base):
        tags = timm.list_pretrained(f"{base}.*")
        if tag and tags and name not in tags:  # timm itself would fail later: "Invalid pretrained tag"
            raise AutolrError(f"model.name = {name!r}: {base} has no pretrained tag {tag!r}; tags: {', '.join(tags)}")
        return
    close = difflib.get_close_matches(base, timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
    raise AutolrError(f"model.name = {name!r} is not a timm model{hint}")


def num_blocks(name: str) -> int:
    """How many blocks the model's adapter sees, on a network built without weights."""
    from autolr.adapters import get_adapter

    return len(get_adapter(name).block_map(_skeleton(name)).blocks)


def _skeleton(name: str) -> nn.Module:
    """The architecture without weights: on the meta device (instant), on the CPU where init needs data."""
    import timm
    import torch

    base = name.split(".")[0]
    try:
        with torch.device("meta"):
            return timm.create_model(base, pretrained=False, num_classes=0)
    except Exception:  # an init that reads tensor values (e.g. a custom model's): build it for real
        return timm.create_model(base, pretrained=False, num_classes=0)


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint and not Path(checkpoint).expanduser().exists():
        raise AutolrError(f"model.checkpoint = {checkpoint!r}: no such file or folder; give a .safetensors/.pth"
                          " file or a run folder, or set model.checkpoint = '' for the hub weights")


def _check_depths(recipe: Recipe, blocks: int) -> None:
    from autolr.adapters._surgery import check_depth

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


def _check_data(recipe: Recipe) -> None:
    import autolr.data

    check_source = getattr(autolr.data, "check_source", None)  # the data package's own cheap look-up
    if check_source is not None:
        check_source(recipe.data)
