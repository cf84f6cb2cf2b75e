"""ViT / DeiT: one block per transformer block; the final norm is neck and stays after a cut."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autolr.adapters import Adapter, BlockMap, register_adapter, with_params

if TYPE_CHECKING:
    from torch import nn

STEM = ("cls_token", "reg_token", "pos_embed", "patch_embed", "norm_pre")


@register_adapter("vit_*", "deit_*", "deit3_*", "test_vit*")
class ViTAdapter(Adapter):
    family = "vit"

    def block_map(self, model: nn.Module) -> BlockMap:
        blocks = [[b] for b in with_params(model, [f"blocks.{i}" for i in range(len(model.blocks))])]
        rest = [n for n, _ in model.named_children() if n not in STEM and n != "blocks"]
        return BlockMap(stem=with_params(model, STEM), blocks=blocks, head=with_params(model, rest))

    def timm_args(self, model: nn.Module) -> dict[str, Any] | None:
        """`depth`: the transformer blocks kept."""
        from torch import nn

        return {"depth": sum(not isinstance(b, nn.Identity) for b in model.blocks)}
