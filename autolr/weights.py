"""Creating timm backbones and loading their weights: the hub, a local file, or a previous run folder.

timm loads weights non-strictly when the classifier size differs and leaves a missing backbone tensor
at random init without a word, so keys are compared here: missing or unexpected backbone keys are an
error naming them; a classifier is dropped and said.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from autolr.errors import AutolrError
from autolr.recipe import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger("autolr")


def create_timm_model(cfg: ModelConfig) -> nn.Module:
    """A timm model with no classifier (`num_classes=0`), with hub weights when `pretrained` and no
    `checkpoint` is given (a checkpoint is loaded after any cut, by `load_checkpoint`)."""
    import timm

    base = cfg.name.split(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise AutolrError(f"model.name = {cfg.name!r} is not a timm model{hint}")
    if cfg.pretrained and not cfg.checkpoint:
        return _from_hub(cfg.name)
    return timm.create_model(cfg.name, pretrained=False, num_classes=0)


def _from_hub(name: str) -> nn.Module:
    """Hub weights; offline, fail within seconds (not after the hub client's retries) or use the cache."""
    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False") or not _hub_reachable()
    if offline:
        cached = _cached_weights(hub_id)
        if cached is None:
            raise AutolrError(
                f"model.pretrained = true needs {name}'s weights from the Hugging Face hub, which cannot be"
                " reached from here (offline). Set model.checkpoint to a local .safetensors/.pth file (or a"
                " previous run folder), or model.pretrained = false"
            )
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": cached})
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # a network or hub error from huggingface_hub
        raise AutolrError(
            f"could not download {name}'s pretrained weights ({type(e).__name__}: {str(e)[:160]}); set"
            " model.checkpoint to a local file or model.pretrained = false"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(hub_id: str | None) -> str | None:
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo = hub_id.split("@")[0]
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Backbone tensors from a `.safetensors` / `.pth` file or an autolr run folder.

    `.pth` files load with `weights_only=True`: arbitrary pickled objects are never executed.
    """
    import torch

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: a folder, but no model.safetensors in it")
        state = _load_file(weights)
        return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if not path.is_file():
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: no such file or folder")
    if path.suffix == ".safetensors":
        return _load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: cannot read it as a weights-only torch file ({e})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if hasattr(v, "shape")}


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise AutolrError(f"{path}: not a readable safetensors file ({e})") from None


def load_checkpoint(model: nn.Module, checkpoint: str | Path) -> None:
    """Load backbone weights strictly: missing / unexpected keys are errors naming them.

    Tolerated and logged: a classifier (the backbone has none), and the tensors of the blocks (and
    neck) that `model.drop_top` cut away, by their module paths before the cut. Nothing else.
    """
    from autolr.adapters._surgery import dropped_paths

    state = read_state_dict(checkpoint)
    own = model.state_dict()
    under = lambda key, prefixes: any(key.startswith(p + ".") for p in prefixes)  # noqa: E731
    extra = [k for k in state if k not in own]
    classifier = [k for k in extra if under(k, _classifier_prefixes(model))]
    cut = [k for k in extra if k not in classifier and under(k, dropped_paths(model))]
    unexpected = [k for k in extra if k not in classifier and k not in cut]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = [
        f"{problem}: {', '.join(keys[:8])}" + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        for problem, keys in (("missing backbone keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys
    ]
    if problems:
        name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r} does not fit {name}: {'; '.join(problems)}")
    if classifier:
        log.info("checkpoint: dropped its classifier (%s)", _describe(state, classifier))
    if cut:
        log.info(
            "checkpoint: %d tensors of the parts model.drop_top removed (%s) not loaded",
            len(cut), ", ".join(p for p in dropped_paths(model) if any(k.startswith(p + ".") for k in cut)),
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _describe(state: dict[str, torch.Tensor], keys: list[str]) -> str:
    """What was dropped, with its size: "fc.weight (1000, 2048), fc.bias (1000,)"."""
    return ", ".join(f"{k} {tuple(state[k].shape)}" for k in keys)


def _classifier_prefixes(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    names = cfg.get("classifier") or "fc"
    return [names] if isinstance(names, str) else list(names)
