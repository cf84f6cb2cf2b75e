"""Metric-learning losses from pytorch-metric-learning (PML), by name, with their papers' defaults.

`train.loss` names one; the `[loss]` section sets its arguments, "auto" taking the paper's value from
the recipe's table (`autolr.recipe.PROXY_LOSSES`, `PAIR_LOSSES`). Proxy losses learn one vector per
training class; pair losses compare the images of a batch, so they need class-balanced batches
(`data.samples_per_class`, checked with the recipe). The built module becomes `net.criterion`, a
submodule of the network: its proxies train in the head's param group, are in every checkpoint and
AutoLR snapshot, and are averaged across DDP ranks like any weight; the exported model leaves them out.

The papers' values, each checked against the paper or the authors' code:
- proxy_anchor: Kim et al., CVPR 2020: margin 0.1, alpha 32 (also PML's defaults).
- normalized_softmax: Zhai & Wu, BMVC 2019: temperature 0.05.
- arcface: Deng et al., CVPR 2019: m = 0.5 rad, s = 64; PML 2.x takes the margin in degrees (28.6).
- multi_similarity: Wang et al., CVPR 2019: alpha 2, beta 50, lambda 1, mining epsilon 0.1. The
  authors' released code uses lambda 0.5 and beta 40; PML's defaults are alpha 2, beta 50, base 0.5.
- contrastive: Hadsell et al. 2006 as PML implements it (hinges not squared): pos_margin 0, neg_margin 1.
- triplet_margin: Schroff et al. (FaceNet), CVPR 2015: margin 0.2 on squared Euclidean distances of
  L2-normalised embeddings, semi-hard triplets mined in the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autolr.errors import AutolrError
from autolr.recipe import MINER_DEFAULTS, PAIR_LOSSES, PAPER_MINERS, PROXY_LOSSES, LossConfig, Recipe

PML_LOSSES = {  # train.loss -> the class in pytorch_metric_learning.losses
    "proxy_anchor": "ProxyAnchorLoss", "normalized_softmax": "NormalizedSoftmaxLoss", "arcface": "ArcFaceLoss",
    "multi_similarity": "MultiSimilarityLoss", "contrastive": "ContrastiveLoss", "triplet_margin": "TripletMarginLoss",
}
PML_MINERS = {"multi_similarity": "MultiSimilarityMiner", "triplet_margin": "TripletMarginMiner",
              "batch_hard": "BatchHardMiner"}
PML_ARGS = {"miner_margin": "margin", "triplets": "type_of_triplets"}  # [loss] key -> PML's, where they differ
SQUARED_L2 = {"triplet_margin"}  # FaceNet's distance: squared Euclidean between unit vectors


def resolved(name: str, cfg: LossConfig) -> dict[str, Any]:
    """The loss's (and its miner's) arguments: the [loss] values, "auto" replaced by the paper's."""
    defaults = PROXY_LOSSES.get(name) or PAIR_LOSSES[name]
    values = {k: (v if getattr(cfg, k) == "auto" else getattr(cfg, k)) for k, v in defaults.items()}
    if name in PAIR_LOSSES:
        values["miner"] = PAPER_MINERS[name] if cfg.miner == "auto" else cfg.miner
        for key, default in MINER_DEFAULTS[values["miner"]].items():
            given = getattr(cfg, key)
            values[key] = given if given != "auto" else (values["margin"] if default is None else default)
    return values


class MetricLoss(nn.Module):
    """A PML loss and its miner: `criterion(embeddings, labels)` -> the batch's loss.

    Computed in float32, outside autocast: PML casts a proxy loss's proxies to the embeddings' dtype in
    place, which under bf16/fp16 would round the learnable proxies themselves.
    """

    def __init__(self, name: str, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.name, self.loss, self.miner = name, loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings = embeddings.float()
            pairs = self.miner(embeddings, labels) if self.miner is not None else None
            return self.loss(embeddings, labels, pairs)


def build_loss(name: str, cfg: LossConfig, num_classes: int, embedding_size: int) -> MetricLoss:
    """The PML loss train.loss = `name` with the [loss] section `cfg`, for `num_classes` training classes
    and embeddings `embedding_size` wide (the proxies' shape)."""
    from pytorch_metric_learning import distances, losses, miners

    values = resolved(name, cfg)
    kwargs = {k: v for k, v in values.items() if k in (PROXY_LOSSES.get(name) or PAIR_LOSSES[name])}
    if name in PROXY_LOSSES:
        kwargs.update(num_classes=num_classes, embedding_size=embedding_size)
    squared = (lambda: {"distance": distances.LpDistance(power=2)}) if name in SQUARED_L2 else dict
    loss = getattr(losses, PML_LOSSES[name])(**kwargs, **squared())
    miner = None
    if values.get("miner", "none") != "none":
        args = {PML_ARGS.get(k, k): values[k] for k in MINER_DEFAULTS[values["miner"]]}
        miner = getattr(miners, PML_MINERS[values["miner"]])(**args, **squared())
    return MetricLoss(name, loss, miner)


def attach_loss(recipe: Recipe, net, data) -> None:
    """A pytorch-metric-learning loss as `net.criterion` (so DDP, checkpoints and AutoLR's snapshots
    carry its proxies); nothing for cross-entropy, which the head's logits feed."""
    name = recipe.train.loss
    if name == "cross_entropy":
        return
    if getattr(data, "task", "retrieval") == "classification":
        raise AutolrError(f"train.loss = {name!r} trains an embedding, but {data.name} is scored by the"
                          " classification head's accuracy: use train.loss = 'cross_entropy' (or a retrieval dataset)")
    net.criterion = build_loss(name, recipe.loss, data.num_classes, net.embedding_dim)
