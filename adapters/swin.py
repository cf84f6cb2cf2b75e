"""Swin Transformer: one block per Swin block; a stage's patch merging belongs to its first block."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap, register_adapter, stage_blocks, with_params

if TYPE_CHECKING:
    from torch import nn


@register_adapter("swin_*")
class SwinAdapter(Adapter):
    family = "swin"

    def block_map(self, model: nn.Module) -> BlockMap:
        return BlockMap(
            stem=with_params(model, ["patch_embed", "absolute_pos_embed"]),
            blocks=stage_blocks(model, "layers"),
            head=with_params(model, ["norm", "head"]),
        )
