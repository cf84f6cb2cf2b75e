"""The generic adapter, for every timm model no family claims.

Blocks come from timm's own `group_matcher(coarse=False)`. Where a model has no matcher (MetaFormer-style
models) or a useless one (a single group), they come from its structure: a `stages` / `layers` /
`blocks` container of blocks. Boundaries: the stem is what the matcher's `stem` entry matches; what
timm puts on the final ordinal (99999 with nothing captured: ViT's final norm, EfficientNet's
conv_head/bn2) is neck/head, never a block. A 99999 suffix after captured numbers (DenseNet's
transitions) means "join the previous group", as in timm.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap, compact, stage_blocks, with_params
from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn

CONTAINERS = ("stages", "layers", "blocks", "features")


def _is_head(matcher, name: str) -> bool:
    """True when timm puts `name` on the final ordinal (unmatched, or a bare 99999 suffix)."""
    if callable(matcher):
        ordinal = matcher(name)
        first = ordinal[0] if isinstance(ordinal, (tuple, list)) else ordinal
        return first >= 99999
    for spec in matcher.values():
        if spec is None:
            continue
        specs = spec if isinstance(spec, (tuple, list)) else [(spec, None)]
        for regex, suffix in specs:
            found = re.match(regex, name)
            if found:
                bare = not any(g is not None for g in found.groups())
                return suffix is not None and suffix[0] >= 99999 and bare
    return True


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


def _modules(names) -> list[str]:
    return sorted({_module_of(n) for n in names})


class GenericAdapter(Adapter):
    family = "generic"

    def block_map(self, model: nn.Module) -> BlockMap:
        bmap = self._from_matcher(model)
        if bmap is None or len(bmap.blocks) < 2:
            bmap = self._from_structure(model) or bmap
        if bmap is None or not bmap.blocks:
            raise AutolrError(
                f"{type(model).__name__}: neither timm's group_matcher nor a stages/layers/blocks container"
                " gives its blocks; register an adapter for it (README: custom adapters)"
            )
        return bmap

    def _from_matcher(self, model: nn.Module) -> BlockMap | None:
        from timm.models._manipulate import group_parameters

        try:
            matcher = model.group_matcher(coarse=False)
        except (AttributeError, NotImplementedError):
            return None
        groups = group_parameters(model, matcher)
        head = [n for g in groups.values() for n in g if _is_head(matcher, n)]
        ordered = [[n for n in groups[o] if not _is_head(matcher, n)] for o in sorted(groups)]
        ordered = [g for g in ordered if g]
        has_stem = isinstance(matcher, dict) and matcher.get("stem") is not None
        stem = ordered[0] if has_stem and ordered else []
        blocks = [compact(model, _modules(g)) for g in ordered[1 if has_stem else 0 :]]
        return BlockMap(stem=compact(model, _modules(stem)), blocks=blocks, head=compact(model, _modules(head)))

    def _from_structure(self, model: nn.Module) -> BlockMap | None:
        children = [name for name, _ in model.named_children()]
        container = next((c for c in CONTAINERS if c in children), None)
        if container is None:
            return None
        inner = getattr(model, container)
        first = inner[0] if hasattr(inner, "__getitem__") and len(inner) else None
        nested = first is not None and (hasattr(first, "blocks") or hasattr(first, "__getitem__"))
        if nested:
            blocks = stage_blocks(model, container, "blocks" if hasattr(first, "blocks") else "")
        else:
            blocks = [[f"{container}.{i}"] for i in range(len(inner))]
            blocks = [b for b in blocks if with_params(model, b)]
        at = children.index(container)
        return BlockMap(
            stem=with_params(model, children[:at]), blocks=blocks, head=with_params(model, children[at + 1 :])
        )
