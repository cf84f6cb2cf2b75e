"""Backbone adapters: a timm model as a stem, an ordered list of blocks (low to high) and a head.

Each built-in family lives in its own module here and registers with `@register_adapter(patterns)`.
Every built-in module is imported the first time the registry is used, so a registration can never
be forgotten; third-party adapters arrive through the `autolr.adapters` entry-point group. Importing
this package (and registering) does not import torch or timm: the CLI's start-up time depends on it.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn


@dataclass
class BlockMap:
    """Module-name prefixes (as in `named_parameters()`) of the stem, each block and the head."""

    stem: list[str]
    blocks: list[list[str]]
    head: list[str] = field(default_factory=list)


class Adapter:
    """Base class: override `block_map` and `truncate` for a family."""

    family = "base"
    patterns: tuple[str, ...] = ()

    def block_map(self, model: nn.Module) -> BlockMap:
        raise NotImplementedError

    def truncate(self, model: nn.Module, drop_top: int) -> None:
        """Remove the top `drop_top` blocks in place and rebuild pooling/head for the new width."""
        raise NotImplementedError


_REGISTRY: list[tuple[tuple[str, ...], type[Adapter]]] = []
_LOADED = False


def register_adapter(*patterns: str):
    """Class decorator: use this adapter for timm model names matching any glob pattern."""
    if not patterns:
        raise ValueError("register_adapter needs at least one timm name pattern, e.g. 'resnet*'")

    def deco(cls: type[Adapter]) -> type[Adapter]:
        cls.patterns = tuple(patterns)
        _REGISTRY.insert(0, (cls.patterns, cls))  # later registrations win: users override built-ins
        return cls

    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "generic":
            importlib.import_module(f"{__name__}.{mod.name}")
    for ep in entry_points(group="autolr.adapters"):
        ep.load()  # importing the module runs its @register_adapter decorators


def adapters() -> list[tuple[tuple[str, ...], type[Adapter]]]:
    """Registered adapters, most recent first (the generic fallback is not listed)."""
    _load_all()
    return list(_REGISTRY)


def get_adapter(model_name: str) -> Adapter:
    """The adapter for a timm model name; the generic adapter when no family claims it."""
    _load_all()
    base = model_name.split(".")[0]  # "resnet50.a1_in1k" -> "resnet50"
    for patterns, cls in _REGISTRY:
        if any(fnmatch.fnmatchcase(base, p) for p in patterns):
            return cls()
    from autolr.adapters.generic import GenericAdapter

    return GenericAdapter()


def split_parameters(model: nn.Module, bmap: BlockMap) -> dict[str, Any]:
    """Assign every trainable parameter to exactly one of stem / a block / head (by longest prefix)."""
    owners = [("stem", p) for p in bmap.stem] + [("head", p) for p in bmap.head]
    owners += [(i, p) for i, block in enumerate(bmap.blocks) for p in block]
    out: dict[str, Any] = {"stem": [], "blocks": [[] for _ in bmap.blocks], "head": [], "unassigned": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        match = [(len(p), o) for o, p in owners if name == p or name.startswith(p + ".") or p == ""]
        if not match:
            out["unassigned"].append(name)
            continue
        owner = max(match, key=lambda m: m[0])[1]
        (out["blocks"][owner] if isinstance(owner, int) else out[owner]).append((name, param))
    return out
