"""EfficientNet / MobileNet-V2/V3 / MNASNet: one block per inverted-residual block.

`conv_head` and its norm are neck: when late blocks go and the channel count changes, they are dropped
(not re-initialised), and the features are the last kept block's channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap, register_adapter, stage_blocks, with_params

if TYPE_CHECKING:
    from torch import nn

NECK = ("conv_head", "bn2", "norm_head", "classifier")


@register_adapter(
    "efficientnet*", "tf_efficientnet*", "mobilenetv2*", "mobilenetv3*", "tf_mobilenetv3*", "mnasnet*",
    "spnasnet*", "fbnetc*", "tinynet*", "lcnet_*",
)
class EfficientNetAdapter(Adapter):
    family = "efficientnet"

    def block_map(self, model: nn.Module) -> BlockMap:
        return BlockMap(
            stem=with_params(model, ["conv_stem", "bn1"]),
            blocks=stage_blocks(model, "blocks", inner=""),
            head=with_params(model, NECK),
        )
