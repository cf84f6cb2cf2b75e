"""Creating timm backbones and loading their weights: the hub, a local file, or a previous run folder.

timm loads weights non-strictly when the classifier size differs and leaves a missing backbone tensor
at random init without a word, so keys are compared here, for hub weights and local checkpoints alike:
missing (or, for a checkpoint, unexpected) backbone keys are an error naming them; a classifier is
dropped and said. The hub is reached through huggingface_hub only (its cache, endpoint, proxies and
offline flag). State dicts lose torch.compile's and DDP's key prefixes wherever they are read.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolr.errors import AutolrError
from autolr.recipe import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger("autolr")


def create_timm_model(cfg: ModelConfig, image_size: int | str = "auto") -> nn.Module:
    """A timm model with no classifier (`num_classes=0`), with hub weights when `pretrained` and no
    `checkpoint` is given (a checkpoint is loaded after any cut, by `load_checkpoint`).

    A model with a fixed input size (timm's `fixed_input_size`: ViT, Swin, ...) is built for
    `image_size` when that differs from its own (`img_size=`; timm resamples loaded position embeddings).
    """
    import timm

    from autolr.adapters import load_plugins

    load_plugins()  # a user's timm model, registered in an entry-point module, must resolve here
    base = check_model_name(cfg.name)
    kwargs = _size_kwargs(cfg.name, image_size)
    try:
        if cfg.pretrained and not cfg.checkpoint:
            model = _from_hub(cfg.name, kwargs)
        else:
            model = timm.create_model(cfg.name, pretrained=False, num_classes=0, **kwargs)
    except (TypeError, AssertionError, RuntimeError, ValueError) as e:
        if not kwargs:  # only a size change makes these the recipe's fault
            raise
        raise _size_error(base, timm.models.get_pretrained_cfg(cfg.name), kwargs["img_size"], e) from None
    if kwargs:
        _check_size(model, base, kwargs["img_size"])
    return model


def check_model_name(name: str) -> str:
    """The timm architecture of `name` ("resnet50.tv_in1k" -> "resnet50"); an unknown one, or an unknown
    pretrained tag, is an error with suggestions."""
    import timm

    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise AutolrError(f"model.name = {name!r} is not a timm model{hint}")
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{base}.*")]
    if tag and tags and tag not in tags:
        raise AutolrError(f"model.name = {name!r}: {base} has no pretrained tag {tag!r}; its tags are"
                          f" {', '.join(tags)} (or give {base!r} alone for timm's default)")
    return base


def _size_kwargs(name: str, image_size: int | str) -> dict[str, int]:
    """`{"img_size": N}` when a fixed-size model must be built for another size, else nothing."""
    import timm

    if image_size == "auto":
        return {}
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.fixed_input_size or int(cfg.input_size[-1]) == int(image_size):
        return {}
    return {"img_size": int(image_size)}


def _check_size(model: nn.Module, base: str, size: int) -> None:
    """The model rebuilt for `size` must run at it (a Swin window may not fit); its `pretrained_cfg`
    then says the size it takes (shape probes and `model.json` read it)."""
    import torch

    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, model.pretrained_cfg.get("input_size", (3,))[0], size, size))
    except Exception as e:  # timm raises AssertionError, RuntimeError or ValueError for a size it cannot take
        raise _size_error(base, model.pretrained_cfg, size, e) from None
    model.train()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (*model.pretrained_cfg["input_size"][:-2], size, size)}


def _size_error(base: str, pretrained_cfg: Any, size: int, e: Exception) -> AutolrError:
    cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else pretrained_cfg.to_dict()
    own = int(cfg["input_size"][-1])
    return AutolrError(
        f"data.image_size = {size}: {base} takes {own} px images only and cannot be built for {size} px"
        f" ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no message'}); set"
        f" data.image_size = {own} (or \"auto\"), or pick a model without a fixed input size"
    )


def _from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Hub weights, from huggingface_hub's cache or downloaded through it (its endpoint, proxies and
    offline mode); timm loads the file, and its keys are then compared with the model's."""
    import timm

    url = getattr(timm.models.get_pretrained_cfg(name), "url", None)
    if not getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None) and url:
        repo, path = url, _from_url(name, url)  # a few old timm weights (gcvit, legacy_se*) are not on the hub
    else:
        repo, revision, filenames = _hub_source(name)
        path = _cached_weights(repo, revision, filenames) or _download(name, repo, revision, filenames)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": path}, **kwargs)
    except (RuntimeError, ValueError, OSError) as e:
        if kwargs and not isinstance(e, OSError):
            raise  # position embeddings that cannot be resampled to img_size: a size error, said by the caller
        raise AutolrError(f"model.pretrained = true: {name}'s weights in {path} do not load ({type(e).__name__}:"
                          f" {str(e)[:200]}); delete that file to download it again, or set model.checkpoint") from None
    check_hub_keys(model, path, repo)
    return model


def _hub_source(name: str) -> tuple[str, str | None, list[str]]:
    """(repository, revision, file names to try) of `name`'s pretrained weights on the hub."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        raise AutolrError(f"model.name = {name!r} has no pretrained weights on the Hugging Face hub: set"
                          " model.checkpoint to a local .safetensors/.pth file, or model.pretrained = false")
    repo, _, revision = hub_id.partition("@")
    wanted = getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"
    safe = wanted.rsplit(".", 1)[0] + ".safetensors"  # timm prefers the safetensors twin too
    return repo, revision or None, list(dict.fromkeys([safe, "model.safetensors", wanted]))


def _from_url(name: str, url: str) -> str:
    """timm's URL-only weights, in torch hub's cache as timm keeps them (downloaded atomically by torch)."""
    from urllib.parse import urlparse

    import torch
    from huggingface_hub import constants

    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if file.is_file():
        return str(file)
    if constants.is_offline_mode():
        raise AutolrError(f"model.pretrained = true needs {name}'s weights from {url} (offline: HF_HUB_OFFLINE is"
                          f" set): download them to {file}, or set model.checkpoint to a local file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(file), progress=False)
    except Exception as e:  # noqa: BLE001 - any network error
        raise AutolrError(f"could not download {name}'s pretrained weights from {url} ({type(e).__name__}: {str(e)[:120]});"
                          f" put the file at {file}, or set model.checkpoint to a local file") from None
    return str(file)


def _cached_weights(repo: str, revision: str | None, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo, filename, revision=revision)
        if isinstance(path, str):
            return path
    return None


def _download(name: str, repo: str, revision: str | None, filenames: list[str], timeout: float = 5.0) -> str:
    """A short HEAD first, so an unreachable hub fails in seconds (not after the client's retries)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    if constants.is_offline_mode():
        raise _offline(name, repo, "HF_HUB_OFFLINE is set")
    for filename in filenames:
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision), timeout=timeout)
        except EntryNotFoundError:
            continue
        except GatedRepoError:
            raise AutolrError(f"model.pretrained = true: {repo} is a gated repository: accept its terms on its hub"
                              " page and log in with `hf auth login`, or set model.checkpoint") from None
        except RepositoryNotFoundError:
            raise AutolrError(f"model.pretrained = true: {repo} is not on {constants.ENDPOINT} (or needs a login:"
                              " `hf auth login`); set model.checkpoint to a local file") from None
        except Exception as e:  # noqa: BLE001 - connection, proxy, TLS or server errors: the hub is out of reach
            raise _offline(name, repo, f"{constants.ENDPOINT} cannot be reached: {type(e).__name__}: {str(e)[:120]}") from None
        return hf_hub_download(repo, filename, revision=revision)
    raise AutolrError(f"model.pretrained = true: {repo} holds none of {', '.join(filenames)}; set model.checkpoint")


def _offline(name: str, repo: str, why: str) -> AutolrError:
    return AutolrError(
        f"model.pretrained = true needs {name}'s weights from the Hugging Face hub, which is out of reach"
        f" ({why}) and not in the local cache. Fetch them where the hub is reachable with"
        f" `hf download {repo}` (the cache is shared through HF_HOME), or set model.checkpoint to a local"
        " .safetensors/.pth file (or a previous run folder), or model.pretrained = false"
    )


def check_hub_keys(model: nn.Module, path: str, repo: str) -> None:
    """timm loads hub weights non-strictly once the classifier is gone: a backbone tensor missing from the
    file would stay at random init. Compare the model's keys with the file's and name what is missing."""
    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    have = _file_keys(path)
    missing = [k for k in own if k not in have]
    if missing and len(missing) == len(own):  # another layout, converted by timm's checkpoint filter
        log.warning("pretrained weights: %s uses other key names than timm's %s; key check skipped", path,
                    type(model).__name__)
        return
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise AutolrError(f"model.pretrained = true: {repo}'s weight file {path} lacks backbone tensors that"
                          f" would stay at random init: {shown}; delete it and fetch it again (`hf download"
                          f" {repo}`), or set model.checkpoint")
    log.info("pretrained weights: %s (%d backbone tensors, every key checked)", repo, len(own))


def _file_keys(path: str) -> set[str]:
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return set(f.keys())
    import torch

    state = torch.load(path, map_location="meta", weights_only=True)
    return set(state.get("state_dict", state) if isinstance(state, dict) else {})


WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile's and DDP's (DataParallel's) wrappers


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the compile / DDP wrapper prefixes, however nested ("_orig_mod.module.x" -> "x"):
    run folders and checkpoints written by a wrapped model still load into a bare one."""
    out = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Backbone tensors from a `.safetensors` / `.pth` file or an autolr run folder, wrapper prefixes
    stripped. `.pth` files load with `weights_only=True`: arbitrary pickled objects are never executed.
    """
    import torch

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: a folder, but no model.safetensors in it")
        state = strip_wrappers(_load_file(weights))
        return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if not path.is_file():
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: no such file or folder")
    if path.suffix == ".safetensors":
        return strip_wrappers(_load_file(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: cannot read it as a weights-only torch file ({e})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise AutolrError(f"model.checkpoint = {str(checkpoint)!r}: holds no state dict")
    return strip_wrappers({k: v for k, v in state.items() if hasattr(v, "shape")})


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
    from autolr.adapters.surgery import dropped_paths

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
