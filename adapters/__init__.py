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
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass
class BlockMap:
    """Module-name prefixes (as in `named_parameters()`) of the stem, each block and the head."""

    stem: list[str]
    blocks: list[list[str]]
    head: list[str] = field(default_factory=list)


class Adapter:
    """One backbone family: how its timm modules split into stem, blocks and head, and how to cut it.

    Subclasses implement `block_map`; `truncate` works for every family through `block_map` (dropped
    blocks become `nn.Identity`), and `neck` names what sits between the last block and pooling.
    """

    family = "base"
    patterns: tuple[str, ...] = ()

    def block_map(self, model: nn.Module) -> BlockMap:
        """Module-name prefixes of stem, blocks (low to high) and head, for the model as it is now."""
        raise NotImplementedError(f"{type(self).__name__} must implement block_map")

    def neck(self, model: nn.Module) -> list[str]:
        """Head modules that run inside `forward_features` or before the embedding, in forward order."""
        head = self.block_map(model).head
        inside = lambda n: any(n == h or n.startswith(h + ".") for h in head)  # noqa: E731
        return [name for name, _ in model.named_modules() if name and inside(name)]

    def timm_args(self, model: nn.Module) -> dict[str, Any] | None:
        """The timm model arguments that build this cut model from its timm name (ResNet `layers`, ViT
        `depth`), so that `autolr export` writes a folder plain timm loads; None: this family cannot
        state its cut that way (the export refuses and names `autolr.load_model`)."""
        return None

    def truncate(self, model: nn.Module, drop_top: int) -> int:
        """Remove the top `drop_top` blocks in place; rebuilds pooling/head; returns the feature size."""
        from autolr.adapters.surgery import truncate

        name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
        return truncate(model, self.block_map(model), drop_top, name, self.neck(model))


def with_params(model: nn.Module, paths) -> list[str]:
    """The paths (module names) that exist in the model and hold trainable parameters."""
    out = []
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            out += [path] if _is_param(model, path) else []
            continue
        if any(p.requires_grad for p in module.parameters()):
            out.append(path)
    return out


def _is_param(model: nn.Module, path: str) -> bool:
    try:
        return model.get_parameter(path).requires_grad
    except AttributeError:
        return False


def compact(model: nn.Module, names: list[str]) -> list[str]:
    """The shortest module prefixes that cover exactly the parameters under `names`."""
    return compact_groups(model, [names])[0]


def compact_groups(model: nn.Module, groups: list[list[str]]) -> list[list[str]]:
    """`compact` for each group, in one pass over the parameters (a 100-block model: 0.02 s, not 2 s)."""
    member_of: dict[str, list[int]] = {}
    for i, names in enumerate(groups):
        for name in names:
            member_of.setdefault(name, []).append(i)
    total: Counter[str] = Counter()  # trainable parameters under each module path
    wanted = [Counter() for _ in groups]  # ... of which are under one of the group's names
    for param, p in model.named_parameters():
        if p.requires_grad:
            paths = ancestors(param)
            hits = {i for a in (*paths, param) for i in member_of.get(a, ())}
            for a in paths:
                total[a] += 1
                for i in hits:
                    wanted[i][a] += 1
    return [_shortest(names, total, counts) for names, counts in zip(groups, wanted, strict=True)]


def _shortest(names: list[str], total: Counter[str], wanted: Counter[str]) -> list[str]:
    out = set()
    for name in names:
        best = name
        for ancestor in ancestors(name)[::-1]:  # nearest first
            if total[ancestor] != wanted[ancestor]:
                break
            best = ancestor
        out.add(best)
    return sorted(p for p in out if not any(a in out for a in ancestors(p)))


def ancestors(path: str) -> list[str]:
    """Every enclosing module path, outermost first: "a.b.c" -> ["a", "a.b"]."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def stage_blocks(model: nn.Module, stages: str, inner: str = "blocks") -> list[list[str]]:
    """Blocks `stages.i.<inner>.j` (or `stages.i.j`); a stage's other modules (its downsample) join
    its first block, so cutting that block cuts the whole stage."""
    blocks = []
    for i, stage in enumerate(model.get_submodule(stages)):
        prefix = f"{stages}.{i}"
        if not with_params(model, [prefix]):
            continue  # a stage already cut away
        if hasattr(stage, inner):
            names = [f"{prefix}.{inner}.{j}" for j in range(len(getattr(stage, inner)))]
            extra = with_params(model, [f"{prefix}.{n}" for n, _ in stage.named_children() if n != inner])
        else:
            names, extra = [f"{prefix}.{j}" for j in range(len(stage))], []
        kept = [[n] for n in with_params(model, names)]
        if kept and extra:
            kept[0] = extra + kept[0]
        blocks += kept
    return blocks


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


def load_plugins() -> None:
    """Import every built-in adapter module and every `autolr.adapters` entry point (idempotent).

    Call it before resolving a model name: an entry-point module may register the timm model itself
    (`@register_model`), so `timm.is_model` only knows a user's backbone after this ran.
    """
    global _LOADED
    if _LOADED:
        return
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name != "generic":
            importlib.import_module(f"{__name__}.{mod.name}")
    for ep in entry_points(group="autolr.adapters"):
        _load_entry_point(ep)  # importing the module runs its @register_model / @register_adapter
    _LOADED = True  # only once all loaded: a failed plugin fails again, not silently on the next call


def _load_entry_point(ep) -> None:
    from autolr.errors import AutolrError

    try:
        ep.load()
    except Exception as e:  # a broken third-party package: name it, not a traceback from inside it
        dist = getattr(ep, "dist", None)
        package = f" (package {dist.name})" if dist is not None else ""
        raise AutolrError(
            f"entry point autolr.adapters {ep.name} = {ep.value!r}{package} fails to import:"
            f" {type(e).__name__}: {e}; fix or reinstall that package, or uninstall it"
        ) from e


def adapters() -> list[tuple[tuple[str, ...], type[Adapter]]]:
    """Registered adapters, most recent first (the generic fallback is not listed)."""
    load_plugins()
    return list(_REGISTRY)


def get_adapter(model_name: str) -> Adapter:
    """The adapter for a timm model name; the generic adapter when no family claims it."""
    load_plugins()
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
