"""The retrieval network: a (truncated) timm backbone, its pooled features, an optional embedding layer,
and the training head."""

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
    """Backbone -> global-pooled features -> (optional) embedding layer -> the training head.

    `model.embedding_dim` = 0 (the paper): the pooled features are the embedding. N > 0: a
    Linear(d, N) embedding layer on top of them (the deep-metric-learning setup, 512-d in most papers),
    initialised as Proxy-Anchor's code does (Kaiming normal, fan-out; zero bias).
    Head, when the loss is cross-entropy (the reference code, method.md section 2): Linear(w, 512) ->
    BatchNorm1d -> LeakyReLU(0.1) -> Dropout(0.5) -> Linear(512, C_train), w the embedding's width.
    A metric-learning loss trains the embedding directly: no head (`head=False`); its module, with any
    proxies, is set as `criterion` by the training loop.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, hidden: int = 512, embedding_dim: int = 0,
                 head: bool = True):
        super().__init__()
        self.backbone = backbone
        d = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # the pooled features' width
        self.embedding = nn.Linear(d, embedding_dim) if embedding_dim else None
        if self.embedding is not None:
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        self.embedding_dim = embedding_dim or d
        self.head = _reference_head(self.embedding_dim, hidden, num_classes) if head else None
        self.criterion: nn.Module | None = None  # a metric-learning loss (and its proxies), while training

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """What retrieval is evaluated on (un-normalised): the embedding layer's output, or the pooled
        backbone features when there is none."""
        f = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.embedding(f) if self.embedding is not None else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The head's logits; without a head (metric-learning loss), the embedding."""
        z = self.embed(x)
        return self.head(z) if self.head is not None else z

    def head_parameters(self) -> list[nn.Parameter]:
        """What trains at the head LR: the head, and a loss's proxies (subclasses with extra heads add theirs)."""
        own = list(self.head.parameters()) if self.head is not None else []
        return own + (list(self.criterion.parameters()) if self.criterion is not None else [])

    def neck_parameters(self) -> list[nn.Parameter]:
        """The embedding layer: it trains with the backbone's neck, at the top block's LR (as Proxy-Anchor
        trains its embedding at the backbone's LR)."""
        return list(self.embedding.parameters()) if self.embedding is not None else []


def _reference_head(width: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.BatchNorm1d(hidden),
        nn.LeakyReLU(0.1),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


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
    """One param group per block (low to high), plus stem, neck (the backbone's, and the embedding layer)
    and head (the training head, and a metric loss's proxies).

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
    groups.append({"name": "neck", "params": [p for _, p in parts["head"]] + net.neck_parameters(), "base_lr": lr})
    groups.append({"name": "head", "params": list(net.head_parameters()), "base_lr": head_lr})
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = g["base_lr"]
    return groups


def model_spec(cfg: ModelConfig, net: RetrievalNet) -> dict[str, Any]:
    """What `model.json` holds: enough to rebuild the network without the recipe."""
    spec = {
        "timm_name": cfg.name,
        "drop_top": cfg.drop_top,
        "num_blocks": len(block_map(net.backbone, cfg.name).blocks),
        "num_features": net.backbone.num_features,
        "embedding_dim": cfg.embedding_dim,  # 0: the pooled features are the embedding
        "pretrained_cfg": {k: v for k, v in net.backbone.pretrained_cfg.items() if _jsonable(v)},
    }
    if net.head is not None:  # a metric-learning loss trains no head
        spec.update(num_classes=net.head[-1].out_features, head_hidden=net.head[0].out_features)
    return spec


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def save_model(net: RetrievalNet, cfg: ModelConfig, run_dir: Path) -> None:
    """`model.safetensors` + `model.json`, each written atomically."""
    from safetensors.torch import save_file

    from autolr.fileio import atomic_write, write_json
    from autolr.weights import strip_wrappers

    # a loss's proxies are training state: they stay in the checkpoints, out of the exported model
    state = {k: v.detach().contiguous().cpu() for k, v in strip_wrappers(net.state_dict()).items()
             if not k.startswith("criterion.")}
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
    # model.json of runs before embedding_dim existed have neither key: a head, no embedding layer
    net = RetrievalNet(backbone, spec.get("num_classes", 0), spec.get("head_hidden", 512),
                       embedding_dim=spec.get("embedding_dim", 0), head="num_classes" in spec)
    net.load_state_dict(strip_wrappers(load_file(str(weights))))
    return net.eval()
