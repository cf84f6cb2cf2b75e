"""Cutting the top blocks off a timm model in place (shared by every adapter).

Dropped blocks are replaced by `nn.Identity` at their own module path, so `forward_features`,
`group_matcher` and the head methods keep working and the parameters are freed. The new feature size
is read from the model (a forward hook on the last kept block), never assumed. A neck that no longer
fits the new width (EfficientNet's `conv_head`/`bn2`, ConvNeXt's `head.norm`) is dropped, not
re-initialised; pooling and head are rebuilt by timm's `reset_classifier(0)`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn

    from autolr.adapters import BlockMap

log = logging.getLogger("autolr")


def common_root(names: list[str]) -> str:
    """The longest module path that all names share ("" when they share none)."""
    parts = [n.split(".") for n in names]
    root = []
    for column in zip(*parts):
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
            f"model.drop_top = {drop_top} is impossible for {model_name} with {num_blocks} blocks:"
            f" choose 0 to {num_blocks - 1}"
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


def feature_width(model: nn.Module, module_path: str = "") -> int:
    """Channels coming out of `module_path` (default: `forward_features`) on a small dummy input."""
    import torch

    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = _first_tensor(output).shape
        raise _Stop

    handle = model.get_submodule(module_path).register_forward_hook(hook) if module_path else None
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            seen.setdefault("shape", model.forward_features(torch.zeros(1, *input_size(model))).shape)
    except _Stop:
        pass
    finally:
        model.train(was)
        if handle is not None:
            handle.remove()
    shape = seen["shape"]
    if len(shape) == 4 and getattr(model, "output_fmt", "NCHW") != "NHWC":
        return int(shape[1])
    return int(shape[-1])


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def input_size(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


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


def truncate(model: nn.Module, bmap: BlockMap, drop_top: int, model_name: str, neck: list[str]) -> int:
    """Replace the top `drop_top` blocks with Identity and drop neck modules that no longer fit.

    `neck`: module paths between the last block and pooling, in forward order. Returns the new width.
    """
    from torch import nn

    check_depth(model_name, len(bmap.blocks), drop_top)
    if drop_top == 0:
        return model.num_features
    kept = len(bmap.blocks) - drop_top
    for block in reversed(bmap.blocks[kept:]):  # top first: a stage root may hold later blocks
        for path in _block_roots(model, block):
            replace_module(model, path, nn.Identity())
    width = _probe(feature_width, model, drop_top, model_name, _block_roots(model, bmap.blocks[kept - 1])[-1])
    dropped: list[str] = []
    for path in neck:
        if any(path.startswith(d + ".") for d in dropped):
            continue
        module = model.get_submodule(path)
        takes = _takes(module)
        if takes is not None and takes != width:
            replace_module(model, path, nn.Identity())
            dropped.append(path)
            log.info("%s: dropped %s (it takes %d channels; the cut leaves %d)", model_name, path, takes, width)
        else:
            width = _gives(module, width)
    model.num_features = _probe(feature_width, model, drop_top, model_name)
    model.reset_classifier(0)
    model.head_hidden_size = embed_width(model)
    return model.num_features


def _probe(fn, model: nn.Module, drop_top: int, model_name: str, *args) -> int:
    """Run a shape probe on the cut model; a model that no longer runs cannot be cut there."""
    try:
        return fn(model, *args)
    except (RuntimeError, TypeError, ValueError) as e:  # e.g. DenseNet: each layer feeds every later one
        raise AutolrError(
            f"model.drop_top = {drop_top}: {model_name} cannot be cut between these blocks"
            f" ({type(e).__name__}: {str(e)[:120]}); set drop_top = 0 or register an adapter for it"
        ) from None


def embed_width(model: nn.Module) -> int:
    """The width of `forward_head(..., pre_logits=True)`: what the retrieval embedding is."""
    import torch

    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            x = model.forward_features(torch.zeros(1, *input_size(model)))
            return int(model.forward_head(x, pre_logits=True).shape[-1])
    finally:
        model.train(was)
