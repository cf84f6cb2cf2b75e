"""ConvNeXt: one block per ConvNeXt block; a stage's downsample belongs to its first block."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap, register_adapter, stage_blocks, with_params

if TYPE_CHECKING:
    from torch import nn


@register_adapter("convnext*", "test_convnext*")
class ConvNeXtAdapter(Adapter):
    family = "convnext"

    def block_map(self, model: nn.Module) -> BlockMap:
        # norm_pre and head.norm are neck/head: when a cut changes the width, head.norm is dropped
        return BlockMap(
            stem=with_params(model, ["stem"]),
            blocks=stage_blocks(model, "stages"),
            head=with_params(model, ["norm_pre", "head.norm", "head.pre_logits", "head.fc"]),
        )
