"""The retrieval network: a (truncated) timm backbone, its pooled embedding, and the training head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autolr.adapters import BlockMap, get_adapter, split_parameters
from autolr.errors import AutolrError
from autolr.recipe import ModelConfig


class RetrievalNet(nn.Module):
    """Backbone -> global-pooled embedding -> the reference code's head (method.md section 2).

    Head: Linear(d, 512) -> BatchNorm1d -> LeakyReLU(0.1) -> Dropout(0.5) -> Linear(512, C_train).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        d = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # the embedding's width
        self.head = nn.Sequential(
            nn.Linear(d, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (un-normalised): what retrieval is evaluated on."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def head_parameters(self):
        """What trains at the head LR (subclasses with extra heads add theirs)."""
        return self.head.parameters()


def create_backbone(cfg: ModelConfig, image_size: int | str = "auto") -> nn.Module:
    """A timm model with its classifier removed, its weights loaded, and its top blocks cut; a model with
    a fixed input size is built for `image_size` (data.image_size) where timm can."""
    from autolr.weights import create_timm_model, load_checkpoint

    backbone = create_timm_model(cfg, image_size)
    if cfg.drop_top:
        get_adapter(cfg.name).truncate(backbone, cfg.drop_top)
    if cfg.checkpoint:  # after the cut: a truncated run folder fits, a full checkpoint's extra blocks are skipped
        load_checkpoint(backbone, cfg.checkpoint)
    return backbone


def block_map(backbone: nn.Module, model_name: str) -> BlockMap:
    return get_adapter(model_name).block_map(backbone)


def block_outputs(backbone: nn.Module, model_name: str) -> list[str]:
    """For each block, low to high, the module whose output is the block's output (its last member)."""
    return [members[-1] for members in block_map(backbone, model_name).blocks]


def param_groups(net: RetrievalNet, model_name: str, lr: float, head_lr: float) -> list[dict[str, Any]]:
    """One SGD param group per block (low to high), plus stem, backbone neck and training head.

    Each group records its `name` and `base_lr`: schedules scale `base_lr`, AutoLR rewrites it.
    """
    parts = split_parameters(net.backbone, block_map(net.backbone, model_name))
    if parts["unassigned"]:
        raise AutolrError(
            f"{model_name}: parameters belong to no block: {', '.join(parts['unassigned'][:5])};"
            " its adapter needs fixing (autolr adapters show MODEL)"
        )
    groups = [{"name": "stem", "params": [p for _, p in parts["stem"]], "base_lr": lr}]
    groups += [
        {"name": f"block{i + 1}", "params": [p for _, p in block], "base_lr": lr}
        for i, block in enumerate(parts["blocks"])
    ]
    groups.append({"name": "neck", "params": [p for _, p in parts["head"]], "base_lr": lr})
    groups.append({"name": "head", "params": list(net.head_parameters()), "base_lr": head_lr})
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = g["base_lr"]
    return groups


def model_spec(cfg: ModelConfig, net: RetrievalNet) -> dict[str, Any]:
    """What `model.json` holds: enough to rebuild the network without the recipe."""
    return {
        "timm_name": cfg.name,
        "drop_top": cfg.drop_top,
        "num_blocks": len(block_map(net.backbone, cfg.name).blocks),
        "num_features": net.backbone.num_features,
        "num_classes": net.head[-1].out_features,
        "head_hidden": net.head[0].out_features,
        "pretrained_cfg": {k: v for k, v in net.backbone.pretrained_cfg.items() if _jsonable(v)},
    }


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def save_model(net: RetrievalNet, cfg: ModelConfig, run_dir: Path) -> None:
    """`model.safetensors` + `model.json`, each written atomically."""
    from safetensors.torch import save_file

    from autolr._io import atomic_write, write_json
    from autolr.weights import strip_wrappers

    state = {k: v.detach().contiguous().cpu() for k, v in strip_wrappers(net.state_dict()).items()}
    atomic_write(run_dir / "model.safetensors", lambda p: save_file(state, str(p)))
    write_json(run_dir / "model.json", model_spec(cfg, net))


def load_model(run_dir: str | Path) -> RetrievalNet:
    """Rebuild a fine-tuned (and truncated) network from `model.safetensors` + `model.json` alone.

    Keys written by a compiled or DDP-wrapped model (`_orig_mod.`, `module.`) load too.
    """
    from safetensors.torch import load_file

    from autolr.weights import create_timm_model, strip_wrappers

    run_dir = Path(run_dir)
    spec_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    for f in (spec_path, weights):
        if not f.is_file():
            raise AutolrError(f"{f} not found: give a finished autolr run folder")
    spec = json.loads(spec_path.read_text())
    size = spec.get("pretrained_cfg", {}).get("input_size", [None])[-1]  # a fixed-size model's, as it was built
    backbone = create_timm_model(ModelConfig(name=spec["timm_name"], pretrained=False), size or "auto")
    if spec["drop_top"]:
        get_adapter(spec["timm_name"]).truncate(backbone, spec["drop_top"])
    net = RetrievalNet(backbone, spec["num_classes"], spec["head_hidden"])
    net.load_state_dict(strip_wrappers(load_file(str(weights))))
    return net.eval()
