"""The generic adapter, for every timm model no family claims.

Blocks come from timm's own `group_matcher(coarse=False)`. Where a model has no matcher (MetaFormer-style
models, PiT) or a useless one (a single group), they come from its structure: first the stages that
timm's `feature_info` taps name, then a `stages` / `layers` / `blocks` / `features` container; a stage
splits into its `blocks`, or its items. Boundaries: the stem is what the matcher's `stem` entry matches;
what timm puts on the final ordinal (99999 with nothing captured: ViT's final norm, EfficientNet's
conv_head/bn2) is neck/head, never a block. A 99999 suffix after captured numbers (DenseNet's
transitions) means "join the previous group", as in timm.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from autolr.adapters import Adapter, BlockMap, compact_groups, with_params

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
        if bmap is None or len(bmap.blocks) < 2:  # no matcher, or a useless one (a single group)
            for stages in (feature_info_stages(model), container_stages(model)):
                found = from_stages(model, stages)
                if len(found.blocks) >= 2:
                    return found
        if bmap is None or not bmap.blocks:
            raise AutolrError(
                f"{type(model).__name__}: neither timm's group_matcher, its feature_info, nor a"
                " stages/layers/blocks container gives its blocks; register an adapter for it"
                " (README: custom adapters)"
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
        stem, *blocks, head = compact_groups(model, [_modules(g) for g in (stem, *ordered[1 if has_stem else 0 :], head)])
        return BlockMap(stem=stem, blocks=blocks, head=head)


def feature_info_stages(model: nn.Module) -> list[str]:
    """Stage paths from timm's `feature_info` taps: every child of the container most taps sit in
    (`transformers.0..2` -> all of `transformers`), else the tapped modules themselves. A tap on the
    stem (`stem*`) is no stage."""
    info = getattr(model, "feature_info", None)
    info = info.get_dicts() if hasattr(info, "get_dicts") else info
    if not isinstance(info, (list, tuple)):
        return []
    taps = [d.get("module") for d in info if isinstance(d, dict) and isinstance(d.get("module"), str)]
    taps = list(dict.fromkeys(t for t in taps if not t.startswith("stem") and with_params(model, [t])))
    if not taps:
        return []
    parent, count = Counter(t.rpartition(".")[0] for t in taps).most_common(1)[0]
    return _children(model, parent) if parent and count >= 2 else taps


def container_stages(model: nn.Module) -> list[str]:
    """The children of the first top-level `stages` / `layers` / `blocks` / `features` container."""
    children = [name for name, _ in model.named_children()]
    container = next((c for c in CONTAINERS if c in children), None)
    return _children(model, container) if container else []


def _children(model: nn.Module, path: str) -> list[str]:
    return with_params(model, [f"{path}.{name}" for name, _ in model.get_submodule(path).named_children()])


def _blocks_of(model: nn.Module, stage: str) -> list[str]:
    """A stage's blocks: `stage.blocks.j`, else `stage.j` for a sequence, else the stage is one block."""
    from torch import nn

    module = model.get_submodule(stage)
    if hasattr(module, "blocks") and with_params(model, [f"{stage}.blocks"]):
        return _children(model, f"{stage}.blocks")
    if isinstance(module, (nn.Sequential, nn.ModuleList)) and (inner := _children(model, stage)):
        return inner
    return [stage]


def from_stages(model: nn.Module, stages: list[str]) -> BlockMap:
    """Stem, blocks and head from ordered stage paths, by where each parameter sits: in a block; else
    in a stage (its downsample or norm: joins the stage's first block, so cutting that block cuts the
    whole stage); else before every block (stem), between blocks (joins the next one), or after (head)."""
    blocks = [b for stage in stages for b in _blocks_of(model, stage)]
    first = {stage: blocks.index(_blocks_of(model, stage)[0]) for stage in stages}
    owners: list[list[str]] = [[] for _ in blocks]
    stem, loose = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        at = _owner(name, blocks) or _owner(name, stages)
        if at is None:
            (loose if any(owners) else stem).append(name)
            continue
        index = blocks.index(at) if at in blocks else first[at]
        owners[index] += [*loose, name]
        loose = []
    kept = [(block, names) for block, names in zip(blocks, owners, strict=True) if names]
    stem, *members, head = compact_groups(model, [_modules(g) for g in (stem, *(n for _, n in kept), loose)])
    holds = lambda block, member: block == member or block.startswith(member + ".")  # noqa: E731
    # the block itself last: its output is the block's output (shape probes, the cut's width)
    blocks = [sorted(m, key=lambda m, b=b: holds(b, m)) for (b, _), m in zip(kept, members, strict=True)]
    return BlockMap(stem=stem, blocks=blocks, head=head)


def _owner(name: str, prefixes: list[str]) -> str | None:
    return next((p for p in prefixes if name.startswith(p + ".")), None)
