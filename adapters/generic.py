"""The generic adapter: blocks from timm's own `group_matcher(coarse=False)`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap
from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn


def _is_head(matcher, name: str) -> bool:
    """True when timm puts `name` on the final ordinal (unmatched, or an explicit 99999 suffix)."""
    if callable(matcher):
        ordinal = matcher(name)
        first = ordinal[0] if isinstance(ordinal, (tuple, list)) else ordinal
        return first >= 99999
    for spec in matcher.values():
        specs = spec if isinstance(spec, (tuple, list)) else [(spec, None)]
        for regex, suffix in specs:
            if re.match(regex, name):
                return suffix is not None and suffix[0] >= 99999
    return True


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


class GenericAdapter(Adapter):
    family = "generic"

    def block_map(self, model: nn.Module) -> BlockMap:
        from timm.models._manipulate import group_parameters

        matcher = model.group_matcher(coarse=False)
        groups = group_parameters(model, matcher)
        # timm's 99999 ordinal means "join the previous group"; here it marks neck/head, never a block
        head = [n for g in groups.values() for n in g if _is_head(matcher, n)]
        ordered = [[n for n in groups[o] if not _is_head(matcher, n)] for o in sorted(groups)]
        ordered = [g for g in ordered if g]
        has_stem = isinstance(matcher, dict) and matcher.get("stem") is not None
        stem = ordered[0] if has_stem and ordered else []
        blocks = [sorted({_module_of(n) for n in g}) for g in ordered[1 if has_stem else 0 :]]
        if not blocks:
            raise AutolrError(f"{type(model).__name__}: timm's group_matcher gives no blocks")
        return BlockMap(
            stem=sorted({_module_of(n) for n in stem}),
            blocks=blocks,
            head=sorted({_module_of(n) for n in head}),
        )

    def truncate(self, model: nn.Module, drop_top: int) -> None:
        if drop_top:
            raise AutolrError(
                f"model.drop_top = {drop_top}: the generic adapter cannot cut {type(model).__name__};"
                " use a model family with an explicit adapter (autolr adapters list) or set drop_top = 0"
            )
