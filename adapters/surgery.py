"""Cutting the top blocks off a timm model in place (shared by every adapter).

Dropped blocks are replaced by `nn.Identity` at their own module path (a container whose blocks all
go, at the container's), so `forward_features`, `group_matcher` and the head methods keep working and
the parameters are freed. The new feature size is read from the model (a forward hook on the last kept
block, on a small dummy image), never assumed. A neck that no longer fits the new width
(EfficientNet's `conv_head`/`bn2`, ConvNeXt's `head.norm`) is dropped, not re-initialised; pooling and
head are rebuilt by timm's `reset_classifier(0)`. A depth the model cannot be cut at is undone and
reported with the depths it can be cut at.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from autolr.adapters import ancestors

from autolr.errors import AutolrError

if TYPE_CHECKING:
    import torch
    from autolr.adapters import BlockMap
    from torch import nn

log = logging.getLogger("autolr")


def common_root(names: list[str]) -> str:
    """The longest module path that all names share ("" when they share none)."""
    parts = [n.split(".") for n in names]
    root = []
    for column in zip(*parts, strict=False):  # stops at the shortest name
        if len(set(column)) != 1:
            break
        root.append(column[0])
    return ".".join(root)


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if child.isdigit() and isinstance(parent, (list, tuple)) is False and hasattr(parent, "__setitem__"):
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def check_depth(model_name: str, num_blocks: int, drop_top: int) -> None:
    if drop_top < 0 or drop_top >= num_blocks:
        raise AutolrError(
            f"model.drop_top = {drop_top} is impossible for {model_name} with {num_blocks} blocks"
            f" (valid: {_spans(list(range(num_blocks)))})"
        )


def _block_roots(model: nn.Module, block: list[str]) -> list[str]:
    """Where to cut a block: its common root module when that holds nothing else, else each member."""
    root = common_root(block)
    if root and all(n == root or n.startswith(root + ".") for n in block):
        inside = lambda n, prefixes: any(n == p or n.startswith(p + ".") for p in prefixes)  # noqa: E731
        if all(inside(n, block) for n, _ in model.named_parameters() if inside(n, [root])):
            return [root]
    return list(block)


class _Stop(Exception):
    """Raised by the probe hook: nothing after the probed module needs to run (it may not fit yet)."""


def feature_width(model: nn.Module, module_path: str = "", size: tuple[int, ...] | None = None) -> int:
    """Channels coming out of `module_path` (default: `forward_features`) on one dummy image."""
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = _first_tensor(output).shape
        raise _Stop

    handle = model.get_submodule(module_path).register_forward_hook(hook) if module_path else None
    try:
        seen.setdefault("shape", features(model, size).shape)
    except _Stop:
        pass
    finally:
        if handle is not None:
            handle.remove()
    return _width(model, seen["shape"])


def features(model: nn.Module, size: tuple[int, ...] | None = None) -> torch.Tensor:
    """`forward_features` of one zero image, in eval mode and without gradients."""
    import torch

    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            return model.forward_features(dummy_input(model, size))
    finally:
        model.train(was)


def embed_width(model: nn.Module, feats: torch.Tensor | None = None) -> int:
    """The width of `forward_head(..., pre_logits=True)`: what the retrieval embedding is."""
    import torch

    feats = features(model) if feats is None else feats
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            return int(model.forward_head(feats, pre_logits=True).shape[-1])
    finally:
        model.train(was)


def _width(model: nn.Module, shape) -> int:
    if len(shape) == 4 and getattr(model, "output_fmt", "NCHW") != "NHWC":
        return int(shape[1])
    return int(shape[-1])


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def dummy_input(model: nn.Module, size: tuple[int, ...] | None = None) -> torch.Tensor:
    """One zero image (default: the model's input size) on the model's device."""
    import torch

    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return torch.zeros(1, *(size or input_size(model)), device=tensor.device if tensor is not None else "cpu")


def input_size(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


def _sizes(model: nn.Module) -> list[tuple[int, ...] | None]:
    """The input sizes shape probes try, smallest first (channel counts do not depend on it, the cost
    does): 32 px, 96 px (Inception-V3 needs 75), then the model's own (a ViT's fixed size)."""
    channels = input_size(model)[0]
    return [(channels, 32, 32), (channels, 96, 96), None]


def _takes(module: nn.Module) -> int | None:
    """The channel count a neck module takes in, when it says."""
    for attr in ("in_channels", "num_features", "in_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _gives(module: nn.Module, width: int) -> int:
    for attr in ("out_channels", "out_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    return width


DROPPED = "_autolr_dropped"  # attribute on a cut model: the module paths the cut replaced


def dropped_paths(model: nn.Module) -> list[str]:
    """Module paths that truncation replaced with `nn.Identity` (blocks and neck): a full checkpoint's
    tensors under them have nowhere to go and are skipped, any other stray key is an error."""
    return list(getattr(model, DROPPED, []))


def truncate(model: nn.Module, bmap: BlockMap, drop_top: int, model_name: str, neck: list[str]) -> int:
    """Replace the top `drop_top` blocks with Identity and drop neck modules that no longer fit.

    `neck`: module paths between the last block and pooling, in forward order. Returns the new width.
    A cut after which the model no longer runs is undone and reported with the depths that do work.
    """
    check_depth(model_name, len(bmap.blocks), drop_top)
    if drop_top == 0:
        return model.num_features
    try:
        feats, replaced, dropped_neck = _cut_at_any_size(model, bmap, drop_top, neck)
    except _CannotCut as e:
        depths, unchecked = valid_depths(model, bmap, neck)
        raise AutolrError(
            f"model.drop_top = {drop_top}: {model_name} cannot be cut between these blocks ({e.reason});"
            f" valid: {_spans(depths)}" + (f" ({unchecked} other depths not checked)" if unchecked else "")
            + ", or register an adapter for it"
        ) from None
    model.num_features = _width(model, feats.shape)
    for path, takes in dropped_neck:
        log.info("%s: dropped %s (it takes %d channels; the cut leaves %d)", model_name, path, takes, model.num_features)
    setattr(model, DROPPED, dropped_paths(model) + [path for path, _ in replaced])
    model.reset_classifier(0)
    model.head_hidden_size = embed_width(model, feats)
    return model.num_features


class _CannotCut(Exception):
    def __init__(self, reason: str, replaced: list):
        super().__init__(reason)
        self.reason, self.replaced = reason, replaced


def _cut_at_any_size(model: nn.Module, bmap: BlockMap, drop_top: int, neck: list[str]):
    """`_cut` probed at the smallest size the model runs at. A failed cut is undone before
    `_CannotCut` is raised."""
    for size in _sizes(model):
        try:
            return _cut(model, bmap, drop_top, neck, size)
        except _CannotCut as e:
            _undo(model, e.replaced)
            error = e
    raise error


def _cut(model: nn.Module, bmap: BlockMap, drop_top: int, neck: list[str], size: tuple[int, ...] | None = None):
    """The surgery itself: (features of a dummy image, [(path, original module)], [(dropped neck
    path, the width it takes)]). Raises `_CannotCut`, holding what it replaced, when the cut model
    no longer runs.
    """
    from torch import nn

    kept = len(bmap.blocks) - drop_top
    replaced: list[tuple[str, nn.Module]] = []
    for path in _cut_paths(model, [m for block in bmap.blocks[kept:] for m in block]):
        replaced.append((path, _get(model, path)))
        replace_module(model, path, nn.Identity())
    dropped_neck: list[tuple[str, int]] = []
    try:
        width = feature_width(model, _block_roots(model, bmap.blocks[kept - 1])[-1], size)
        for path in neck:
            if any(path.startswith(d + ".") for d, _ in dropped_neck):
                continue
            module = model.get_submodule(path)
            if list(module.children()) and not list(module.parameters(recurse=False)):
                continue  # a container (hgnet's whole `head`): judge its members, not it
            takes = _takes(module)
            if takes is not None and takes != width:
                unit = _neck_unit(path, bmap.head)
                replaced.append((unit, model.get_submodule(unit)))
                replace_module(model, unit, nn.Identity())
                dropped_neck.append((unit, takes))
            else:
                width = _gives(module, width)
        return features(model, size), replaced, dropped_neck
    except (RuntimeError, TypeError, ValueError, AssertionError) as e:  # e.g. a DenseNet layer
        raise _CannotCut(f"{type(e).__name__}: {str(e)[:120]}", replaced) from None


def _neck_unit(path: str, head: list[str]) -> str:
    """What goes with a neck module that no longer fits: the outermost module holding it below the
    head's own roots, e.g. hgnet's `head.last_conv` (conv, act, affine) for `head.last_conv.0`. The
    roots stay: timm's `reset_classifier` rebuilds them (and hgnet's wants `last_conv` gone whole)."""
    roots = {a for h in head for a in (h, *ancestors(h))}
    outer = [a for a in ancestors(path) if a not in roots]
    return outer[0] if outer else path


def _get(model: nn.Module, path: str):
    try:
        return model.get_submodule(path)
    except AttributeError:
        return model.get_parameter(path)


def _undo(model: nn.Module, replaced: list) -> None:
    for path, module in reversed(replaced):
        replace_module(model, path, module)


def _cut_paths(model: nn.Module, members: list[str], tensors: list[str] | None = None) -> list[str]:
    """Where to put Identity for these dropped members: the outermost modules (short of the model
    itself) whose every tensor belongs to them. A container whose children all go is replaced
    whole, so that e.g. a DenseNet dense block (each layer feeds every later one) can be cut.
    `tensors`: the model's parameter and buffer names (default: as it is now)."""
    chosen = set(members)
    total: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    for name in tensors or _tensor_names(model):
        paths = ancestors(name)
        hit = name in chosen or any(a in chosen for a in paths)
        for a in paths:
            total[a] += 1
            inside[a] += hit
    out = set()
    for member in members:
        best = member
        for ancestor in reversed(ancestors(member)):  # nearest first
            if total[ancestor] != inside[ancestor]:
                break
            best = ancestor
        out.add(best)
    return sorted(p for p in out if not any(a in out for a in ancestors(p)))


def _tensor_names(model: nn.Module) -> list[str]:
    return [name for name, _ in [*model.named_parameters(), *model.named_buffers()]]


SEARCH_BUDGET_S = 10.0  # for the depths that work, after one that does not


def valid_depths(model: nn.Module, bmap: BlockMap, neck: list[str], budget_s: float = SEARCH_BUDGET_S) -> tuple[list[int], int]:
    """The `drop_top` values after which the model still runs, and how many went unchecked.

    Each cut is made in place, probed at a small input where the model takes one, and undone (no
    copies). Cuts of whole containers (a DenseNet dense block) are tried first; after `budget_s`
    the rest are left unchecked (DenseNet-121 has 58 depths).
    """
    size, tensors = _probe_size(model), _tensor_names(model)
    top = lambda d: [m for block in bmap.blocks[len(bmap.blocks) - d :] for m in block]  # noqa: E731
    nesting = {d: max(p.count(".") for p in _cut_paths(model, top(d), tensors)) for d in range(1, len(bmap.blocks))}
    order = sorted(nesting, key=lambda d: (nesting[d], d))
    start, depths = time.monotonic(), [0]
    tried = 0
    for drop_top in order:
        tried += 1
        try:
            replaced = _cut(model, bmap, drop_top, neck, size)[1]
            depths.append(drop_top)
        except _CannotCut as e:
            replaced = e.replaced
        _undo(model, replaced)
        if time.monotonic() - start > budget_s:
            break
    return sorted(depths), len(order) - tried


def _probe_size(model: nn.Module) -> tuple[int, ...] | None:
    """The smallest of `_sizes` that the uncut model runs at."""
    for size in _sizes(model)[:-1]:
        try:
            feature_width(model, size=size)
            return size
        except (RuntimeError, TypeError, ValueError, AssertionError):  # a fixed input size (ViT, Swin)
            pass
    return None


def _spans(depths: list[int]) -> str:
    """[0, 1, 2, 5] -> "0..2, 5"."""
    spans, start = [], depths[0]
    for prev, d in zip(depths, [*depths[1:], None], strict=True):
        if d is None or d != prev + 1:
            spans.append(f"{start}..{prev}" if prev > start else str(start))
            start = d
    return ", ".join(spans)
