"""ResNet family (ResNet-18/34/50/101/152, ResNeXt, SE-ResNet, ...): one block per residual block.

ResNet-50 has 16 bottleneck blocks: layer1.0-2, layer2.0-3, layer3.0-5, layer4.0-2 (the paper's split).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autolr.adapters import Adapter, BlockMap, register_adapter, with_params

if TYPE_CHECKING:
    from torch import nn

LAYERS = ("layer1", "layer2", "layer3", "layer4")


@register_adapter(
    "resnet[0-9]*", "resnext*", "seresnet*", "seresnext*", "wide_resnet*", "ecaresnet*", "resnetrs*",
    "resnetblur*", "skresnet*", "skresnext*", "test_resnet*", "gluon_resnet*", "tv_resnet*",
)
class ResNetAdapter(Adapter):
    family = "resnet"

    def block_map(self, model: nn.Module) -> BlockMap:
        if not hasattr(model, "layer1"):  # a name like resnext26ts can be another architecture (ByobNet)
            from autolr.adapters.generic import GenericAdapter

            return GenericAdapter().block_map(model)
        children = [name for name, _ in model.named_children()]
        first = children.index("layer1")
        blocks = []
        for layer in LAYERS:
            if with_params(model, [layer]):  # a stage cut away entirely is an Identity
                blocks += [[b] for b in with_params(model, [f"{layer}.{i}" for i in range(len(getattr(model, layer)))])]
        after = children[children.index("layer4") + 1 :]
        return BlockMap(stem=with_params(model, children[:first]), blocks=blocks, head=with_params(model, after))

    def timm_args(self, model: nn.Module) -> dict[str, Any] | None:
        """`layers`: the blocks each stage kept (a stage cut away whole is 0)."""
        if not hasattr(model, "layer1"):  # another architecture under a ResNet-like name
            return None
        from torch import nn

        def kept(stage) -> int:
            return 0 if isinstance(stage, nn.Identity) else sum(not isinstance(b, nn.Identity) for b in stage)

        return {"layers": [kept(getattr(model, layer)) for layer in LAYERS]}
