"""`autolr export`: a run's fine-tuned backbone as a timm model folder, loadable without autolr.

The folder is what timm's own `save_for_hf` writes (config.json + model.safetensors), plus a model card
(README.md) with the run's recipe and metrics, so that `timm.create_model("local-dir:DIR",
pretrained=True)` (or `"hf-hub:REPO_ID"` after `--push`) builds the fine-tuned backbone: its pooled
features are the run's retrieval embedding before normalisation. A backbone whose top blocks were cut
exports only where its adapter states the cut as timm model arguments (ResNet `layers`, ViT/DeiT
`depth`); timm then builds the short model itself. Before the folder is published its copy is loaded
back through timm and its features compared with the run's on a batch: an export that timm would
rebuild differently is refused, never written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolr.errors import AutolrError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("autolr")
FILES = ("config.json", "model.safetensors", "README.md")


@dataclass
class Export:
    folder: Path
    model_args: dict[str, Any]  # what timm needs besides the name to build the cut model
    url: str | None = None  # the hub commit, after --push


def export_run(run: str | Path, output: str | Path, *, push: str | None = None, private: bool = False) -> Export:
    """Write RUN's backbone as a timm folder in `output`; with `push`, upload it to that hub repo."""
    from autolr.eval.saved import load_saved

    output = Path(output)
    _check_output(output)
    saved = load_saved(run)
    spec = json.loads(((saved.run_dir or Path(run).parent) / "model.json").read_text())
    args = timm_model_args(saved.net.backbone, saved.model_name, spec.get("drop_top", 0))
    model = rebuild(saved.net.backbone, saved.model_name, args)
    if getattr(saved.net, "embedding", None) is not None:  # model.embedding_dim: a layer timm's model lacks
        log.warning("export: the run's embedding layer (model.embedding_dim) is not part of the timm model; its"
                    " pooled features are the layer's input. autolr.load_model(RUN).embed gives the run's embedding")
    card = model_card(saved, args, push)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        data_cfg = data_config(saved)
        write_folder(model, Path(tmp), data_cfg, card)
        check_loads(Path(tmp), saved.net.backbone, data_cfg["input_size"])
        _publish(Path(tmp), output)
    url = upload(output, push, private) if push else None
    return Export(output, args, url)


def timm_model_args(backbone: nn.Module, model_name: str, drop_top: int) -> dict[str, Any]:
    """The timm arguments that build the cut architecture ({} for a full one), or a refusal."""
    if not drop_top:
        return {}
    from autolr.adapters import get_adapter

    adapter = get_adapter(model_name)
    args = adapter.timm_args(backbone)
    if args is None:
        raise AutolrError(
            f"{model_name} with model.drop_top = {drop_top}: its adapter ({adapter.family}) cannot state the cut"
            " as timm model arguments, so timm cannot rebuild it; load the run with autolr.load_model(RUN)"
            " (its .backbone is the timm module), or export a run with model.drop_top = 0")
    return args


def rebuild(backbone: nn.Module, model_name: str, args: dict[str, Any]) -> nn.Module:
    """A fresh timm model of `model_name` built with `args`, holding the backbone's weights: refused
    where its tensors or feature size differ from the backbone's (the arguments would not rebuild it)."""
    import timm

    # what timm's factory was given for the backbone (e.g. a ViT's img_size): timm records it for its own exports
    given = {k: v for k, v in getattr(backbone, "_model_args", {}).items() if k != "num_classes"}
    why = None
    try:
        model = timm.create_model(model_name, pretrained=False, **{**given, "num_classes": 0, **args})
    except Exception as e:  # a timm entry point that does not take the argument
        model, why = None, f"timm cannot build it ({type(e).__name__}: {str(e)[:120]})"
    if model is not None:
        why = _difference(model, backbone)
    if why:
        shown = ", ".join(f"{k}={v}" for k, v in args.items())
        raise AutolrError(f"{model_name} with {shown}: {why}; load the run with autolr.load_model(RUN) instead")
    model.load_state_dict(backbone.state_dict())
    return model.eval()


def _difference(model: nn.Module, backbone: nn.Module) -> str | None:
    mine, theirs = model.state_dict(), backbone.state_dict()
    odd = sorted(set(mine) ^ set(theirs)) + [k for k in mine if k in theirs and mine[k].shape != theirs[k].shape]
    if odd:
        return f"timm's model has other tensors ({', '.join(odd[:4])})"
    if model.num_features != backbone.num_features:  # e.g. a ResNet stage cut away whole: timm keeps its width
        return (f"timm's model would report num_features = {model.num_features}, the cut backbone has"
                f" {backbone.num_features}")
    return None


def data_config(saved) -> dict[str, Any]:
    """The run's test preprocessing in timm's terms (input size, crop, interpolation, mean/std)."""
    from autolr.data.transforms import resolve_image_size, test_resize

    cfg = saved.net.backbone.pretrained_cfg
    size = resolve_image_size(saved.recipe.data.image_size, cfg)
    if saved.recipe.data.transform == "timm":
        return {"input_size": (3, size, size)}
    return {"input_size": (3, size, size), "crop_pct": round(size / test_resize(size), 4),
            "interpolation": "bicubic", "crop_mode": "center"}


def write_folder(model: nn.Module, folder: Path, data_cfg: dict[str, Any], card: str) -> None:
    """timm's `save_for_hf` (safetensors only) and the model card."""
    from timm.models import save_for_hf

    save_for_hf(model, folder, safe_serialization=True, data_config=data_cfg)
    (folder / "README.md").write_text(card)


def check_loads(folder: Path, backbone: nn.Module, input_size: tuple[int, int, int]) -> None:
    """Load the folder back as a user would and compare its pooled features with the backbone's on a
    random batch at the run's input size (a fixed-size model: its own)."""
    import timm
    import torch

    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    size = loaded.pretrained_cfg.get("input_size", input_size)
    was = backbone.training
    backbone.eval()
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = backbone(x), loaded(x)
    backbone.train(was)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5):
        raise AutolrError("the timm folder does not rebuild the run's backbone (its features differ); nothing"
                          " was written. Load the run with autolr.load_model(RUN)")


def _check_output(output: Path) -> None:
    if output.is_file():
        raise AutolrError(f"--output {output}: a file; give a folder (new, or an earlier export to replace)")
    if output.is_dir() and any(output.iterdir()) and not (output / "config.json").is_file():
        raise AutolrError(f"--output {output}: a folder with other files in it; give a new folder (or an earlier export)")
    output.parent.mkdir(parents=True, exist_ok=True)


def _publish(tmp: Path, output: Path) -> None:
    """Move the checked files into `output`, one atomic rename each (an earlier export's are replaced)."""
    output.mkdir(exist_ok=True)
    for name in FILES:
        os.replace(tmp / name, output / name)


def upload(folder: Path, repo_id: str, private: bool = False) -> str:
    """`huggingface_hub`'s create_repo (if missing) + upload_folder; any hub error names the fix."""
    from huggingface_hub import HfApi

    api = HfApi(library_name="autolr")
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=getattr(repo, "repo_id", repo_id), folder_path=folder,
                                 commit_message="Add a model fine-tuned with autolr", allow_patterns=list(FILES))
    except Exception as e:  # network, auth, a bad repo id: huggingface_hub raises many kinds
        raise AutolrError(f"--push {repo_id}: the upload failed ({type(e).__name__}: {str(e).splitlines()[0][:160]});"
                          f" the export is in {folder}. Log in (`hf auth login` or HF_TOKEN) and check the repo id,"
                          " then push again") from None
    return str(getattr(info, "commit_url", info))


def model_card(saved, args: dict[str, Any], repo_id: str | None) -> str:
    """README.md: front matter for the hub, how to load it, what the embedding is, recipe and metrics."""
    run_dir = saved.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text()) if run_dir and (run_dir / "metrics.json").is_file() else {}
    recipe = saved.recipe
    base = saved.net.backbone.pretrained_cfg.get("hf_hub_id") if recipe.model.pretrained else None
    source = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    lines = ["---", "library_name: timm", "pipeline_tag: image-feature-extraction",
             "tags:", "- timm", "- autolr", "- image-retrieval", "- image-feature-extraction"]
    lines += [f"base_model: {base}"] if base else []
    lines += ["---", "", f"# {repo_id.split('/')[-1] if repo_id else saved.model_name} (fine-tuned with autolr)", ""]
    cut = f" with its top {recipe.model.drop_top} blocks removed (timm arguments: {_args_text(args)})" if args else ""
    lines += [f"A `{saved.model_name}` backbone{cut}, fine-tuned for image retrieval on `{recipe.data.name}` by"
              f" autolr with the `{recipe.train.schedule}` LR schedule.", "",
              "```python", "import timm, torch", f'model = timm.create_model("{source}", pretrained=True).eval()',
              "cfg = timm.data.resolve_data_config({}, model=model)",
              "transform = timm.data.create_transform(**cfg)",
              "embedding = torch.nn.functional.normalize(model(transform(image)[None]), dim=1)", "```", "",
              "The run scored the L2-normalised pooled features" + (" of each image plus its horizontal flip" if recipe.eval.flip else "")
              + " by cosine similarity." + (" Its test transform was Resize((r, r)) + CenterCrop; timm's `create_transform`"
              " resizes the shorter side instead, which differs for non-square images." if recipe.data.transform == "paper" else ""), ""]
    lines += _metrics_lines(metrics)
    lines += ["## Recipe", "", "```toml", recipe.to_toml().strip(), "```", ""]
    return "\n".join(lines)


def _metrics_lines(metrics: dict[str, Any]) -> list[str]:
    keys = [k for k in metrics if k.startswith(("recall@", "map@", "accuracy")) and isinstance(metrics[k], (int, float))]
    if not keys:
        return []
    before = metrics.get("initial", {})
    rows = [f"| {k} | {_pct(before.get(k))} | {_pct(metrics[k])} |" for k in keys]
    split = "validation" if metrics.get("split") == "val" else "test"
    return [f"## Metrics ({metrics.get('dataset', '')}, {split} split, %)", "", "| metric | before | after |",
            "| --- | --- | --- |", *rows, ""]


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _args_text(args: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in args.items())
