"""Creating timm backbones and loading their weights (hub, local file, or a previous run folder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolr.errors import AutolrError
from autolr.recipe import ModelConfig

if TYPE_CHECKING:
    from torch import nn


def create_timm_model(cfg: ModelConfig) -> nn.Module:
    """A timm model with no classifier (`num_classes=0`)."""
    import timm

    if not timm.is_model(cfg.name.split(".")[0]):
        raise AutolrError(f"model.name = {cfg.name!r} is not a timm model (see timm.list_models())")
    return timm.create_model(cfg.name, pretrained=cfg.pretrained and not cfg.checkpoint, num_classes=0)
