"""Inception-V3: the paper's 13 stages (Table 3). It has no stem: [Conv2d_1a, 2a, 2b] is block 1."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap, register_adapter, with_params

if TYPE_CHECKING:
    from torch import nn

STAGES = (
    ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
    ("Conv2d_3b_1x1", "Conv2d_4a_3x3"),
    *((name,) for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                           "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")),
)


@register_adapter("inception_v3*", "tf_inception_v3*", "adv_inception_v3*", "gluon_inception_v3*")
class InceptionV3Adapter(Adapter):
    family = "inception_v3"

    def block_map(self, model: nn.Module) -> BlockMap:
        blocks = [kept for stage in STAGES if (kept := with_params(model, stage))]
        in_blocks = {name for stage in STAGES for name in stage}
        rest = [name for name, _ in model.named_children() if name not in in_blocks]
        return BlockMap(stem=[], blocks=blocks, head=with_params(model, rest))  # AuxLogits, fc
