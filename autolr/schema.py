"""The recipe's schema: one typed section per table of a recipe (model, prune, data, train, autolr,
loss, eval, output), every key with its default and its check. `autolr.recipe` loads TOML into it.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def closest(word: str, options: list[str]) -> str | None:
    """The option nearest to a misspelt `word`, for "did you mean" hints (None if none is close)."""
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


Auto = Literal["auto"]
# accelerate's experiment trackers (accelerate.utils.LoggerType), for output.log_with
TRACKERS = {"all", "tensorboard", "wandb", "trackio", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "resnet50"  # any timm model name
    pretrained: bool = True  # timm hub weights
    checkpoint: str = ""  # a local .safetensors/.pth file or a previous run folder; wins over pretrained
    drop_top: int = Field(0, ge=0)  # blocks removed from the top
    channels_last: bool | Auto = "auto"  # auto: on for conv nets on a GPU
    compile: bool = False  # torch.compile the model (the first compile is slow)
    embedding_dim: int = Field(0, ge=0)  # 0: the pooled backbone features (the paper); N: a Linear(d, N) embedding layer


class PruneConfig(_Section):
    """How many top blocks to drop (fixed or searched, method.md 4), or iterative weight pruning (5)."""

    mode: Literal["fixed", "search", "iterative"] = "fixed"  # fixed: model.drop_top
    metric: str = "auto"  # selection score: auto = recall@1 (retrieval) or accuracy (classification)
    # -- mode = "search" (Algorithm 1): candidates train on the training classes minus the validation split
    estimator: Literal["full", "heads"] = "full"  # full: one fine-tune per depth; heads: one joint training
    epochs: int = Field(0, ge=0)  # epochs per search training; 0 = train.epochs
    schedule: Literal["constant", "step", "multistep", "cosine"] = "constant"  # the single-LR search schedule
    max_drop: float = Field(0.0, ge=0)  # keep cutting while the score falls by at most this much
    max_depth: int = Field(0, ge=0)  # deepest cut tried; 0 = as deep as leaves 2 blocks
    # -- mode = "iterative" (SILO): prune a fraction of the remaining weights each cycle, retrain
    rate: float = Field(0.2, gt=0, lt=1)  # fraction of the remaining conv/linear weights pruned per cycle
    cycles: int = Field(5, ge=1)  # pruning cycles after the dense cycle 0
    cycle_epochs: int = Field(0, ge=0)  # epochs per cycle; 0 = train.epochs
    criterion: Literal["magnitude", "movement"] = "magnitude"  # movement: |w_T - w_(T-1)| over the last epoch
    rewind: Literal["none", "weights"] = "none"  # weights: survivors go back to cycle 0's epoch rewind_epoch
    rewind_epoch: int = Field(0, ge=0)  # 0 = the weights before any training
    lr_schedule: Literal["silo", "warmup", "lr_rewind", "finetune", "oracle"] = "silo"
    warmup_epochs: int = Field(1, ge=0)  # silo/warmup: linear warmup from 0 to max_lr
    decay_at: list[float] = [0.5, 0.75]  # silo/warmup: LR /10, then /100 at these fractions of a cycle
    max_lr: float = Field(0.1, gt=0)  # warmup: the fixed peak (cycle 0 of every schedule but silo, too)
    finetune_lr: float = Field(1e-3, gt=0)  # finetune: the constant LR of cycles 1..
    silo_offset: float = Field(0.03, ge=0)  # silo: max_lr(k) = offset + a * S(x(k)), method.md 5
    silo_a: float = Field(0.04, ge=0)
    silo_b: float = Field(5.0, gt=0)
    silo_delay: int = Field(1, ge=0)
    oracle_grid: list[float] = [0.01, 0.02, 0.04, 0.06, 0.08, 0.1]  # oracle: the max_lr candidates per cycle

    @field_validator("decay_at")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v) or v != sorted(v):
            raise ValueError("must be ascending fractions of a cycle, each between 0 and 1")
        return v

    @field_validator("oracle_grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v or min(v) <= 0:
            raise ValueError("must be a non-empty list of positive learning rates")
        return v


class DataConfig(_Section):
    name: Literal["digits", "imagefolder", "cub200", "cars196", "sop", "inshop", "cifar10", "cifar100"] = "digits"
    root: str = ""  # where the dataset lives on disk
    hub_id: str = ""  # a Hugging Face hub dataset id (CUB and Cars copies), used when root is empty
    image_size: int | Auto = "auto"  # auto: the model's pretrained input size (299 for Inception-V3)
    transform: Literal["paper", "timm"] = "paper"  # paper: Resize + flip; timm: create_transform
    batch_size: int = Field(40, ge=1)
    workers: int = Field(4, ge=0)
    strict_counts: bool = True  # image/class counts must match the dataset's known sizes
    skip_corrupt: bool = False  # skip (and count) unreadable images instead of stopping
    val_fraction: float = Field(0.2, ge=0, lt=1)  # training classes carved out for selection
    selection_split: Literal["val", "test"] = "val"  # test: only to reproduce the paper's selection
    samples_per_class: int = Field(0, ge=0)  # m > 0: class-balanced batches of m images per class
    cache_dir: str = ""  # where `autolr data prepare` saves datasets (default ~/.cache/autolr/datasets)

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 8:
            raise ValueError("must be 'auto' or an integer >= 8")
        return v


class TrainConfig(_Section):
    epochs: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0)  # every block's starting LR
    head_lr: float = Field(1e-2, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    optimizer: str = "sgd"  # or any timm optimizer name (adamw, lamb, lion, adan, ...: timm.optim.list_optimizers())
    betas: list[float] | Auto = "auto"  # the optimizer's betas, where it has them (auto: its own defaults)
    eps: float | Auto = "auto"  # the optimizer's eps, where it has one (auto: its own default)
    weight_decay_1d: bool = True  # norms and biases decay too (the paper); false: timm's convention for AdamW
    loss: str = "cross_entropy"  # the reference head's; or a pytorch-metric-learning loss, set up in [loss]
    schedule: Literal["constant", "step", "multistep", "cyclic", "sgdr", "cosine", "layer_decay", "autolr"] = "constant"
    milestones: list[int] = [40]  # step/multistep/autolr: epochs after which every LR is multiplied by gamma
    gamma: float = Field(0.2, gt=0)
    lr_min: float = Field(1e-4, ge=0)  # cyclic/sgdr/cosine: the minimum (lr is the maximum)
    cycles: int = Field(2, ge=1)  # cyclic: triangular cycles over the run
    restarts: int = Field(2, ge=0)  # sgdr: warm restarts over the run
    warmup_epochs: int = Field(0, ge=0)  # linear warmup (cosine)
    layer_decay: float = Field(0.75, gt=0, le=1)  # layer_decay: LR scale = decay ** (depth from the top)
    layer_decay_always: bool = False  # true: layer_decay scales the LRs under any schedule but autolr (cosine...)
    seed: int = 0
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: what accelerate launch says
    grad_accum: int = Field(1, ge=1)  # batches per optimizer step
    log_every: int = Field(20, ge=1)  # steps between loss read-outs (the only host syncs)
    keep_checkpoints: int = Field(1, ge=1)  # newest epoch checkpoints kept for --resume

    @model_validator(mode="after")
    def _lr_range(self) -> TrainConfig:
        if self.schedule in ("cyclic", "sgdr", "cosine") and self.lr_min > self.lr:
            raise ValueError(f"lr_min = {self.lr_min} is above lr = {self.lr} (lr is the maximum): lower train.lr_min")
        return self


class AutolrConfig(_Section):
    """AutoLR (Algorithm 2), used when train.schedule = "autolr"; method.md section 3."""

    alpha: float = Field(2.0, gt=0)  # first-epoch ramp starts at alpha * min(v)
    beta: float = Field(0.4, gt=0)  # ... and ends at beta * max(v)
    tau: float = Field(0.94, gt=0, le=1)  # sorting-quality threshold
    strict: bool = False  # true: the paper's S > tau, never relaxed; false: the reference code's rule
    max_trials: int = Field(5, ge=1)  # runs of one epoch at most; then the best-scoring trial is kept
    min_lr: float = Field(1e-6, gt=0)
    max_lr: float = Field(0.1, gt=0)
    reset_momentum: bool = True  # clear momentum buffers at every trial and epoch (reference code)
    stem_scale: float = Field(0.5, ge=0)  # stem LR = stem_scale x block 1's LR (reference code)
    hold_head: bool = True  # the head keeps train.head_lr (reference code)


class LossConfig(_Section):
    """Arguments of the pytorch-metric-learning loss that train.loss names; "auto" is its paper's value
    (the table below; sources in autolr/train/losses.py). A key the chosen loss does not take is an error."""

    margin: float | Auto = "auto"  # proxy_anchor 0.1; arcface 28.6 (degrees: 0.5 rad); triplet_margin 0.2
    alpha: float | Auto = "auto"  # proxy_anchor 32; multi_similarity 2
    beta: float | Auto = "auto"  # multi_similarity 50
    base: float | Auto = "auto"  # multi_similarity's lambda: 1 (the paper; its released code and PML: 0.5)
    scale: float | Auto = "auto"  # arcface 64
    temperature: float | Auto = "auto"  # normalized_softmax 0.05
    pos_margin: float | Auto = "auto"  # contrastive 0
    neg_margin: float | Auto = "auto"  # contrastive 1
    # -- pair losses: the miner that picks a batch's pairs or triplets (auto: the loss's paper's)
    miner: Literal["auto", "none", "multi_similarity", "triplet_margin", "batch_hard"] = "auto"
    epsilon: float | Auto = "auto"  # multi_similarity miner 0.1
    miner_margin: float | Auto = "auto"  # triplet_margin miner; auto: loss.margin
    triplets: Literal["auto", "semihard", "hard", "easy", "all"] = "auto"  # triplet_margin miner; auto: semihard


# train.loss -> its [loss] keys with their papers' values. Proxy losses learn one vector per class; pair
# losses compare the images of a batch and need class-balanced batches (data.samples_per_class).
PROXY_LOSSES: dict[str, dict[str, float]] = {
    "proxy_anchor": {"margin": 0.1, "alpha": 32.0},
    "normalized_softmax": {"temperature": 0.05},
    "arcface": {"margin": 28.6, "scale": 64.0},
}
PAIR_LOSSES: dict[str, dict[str, float]] = {
    "multi_similarity": {"alpha": 2.0, "beta": 50.0, "base": 1.0},
    "contrastive": {"pos_margin": 0.0, "neg_margin": 1.0},
    "triplet_margin": {"margin": 0.2},
}
PAPER_MINERS = {"multi_similarity": "multi_similarity", "contrastive": "none", "triplet_margin": "triplet_margin"}
MINER_DEFAULTS: dict[str, dict[str, float | str | None]] = {  # None: the loss's margin
    "none": {}, "multi_similarity": {"epsilon": 0.1}, "triplet_margin": {"miner_margin": None, "triplets": "semihard"},
    "batch_hard": {},
}
LOSSES = ("cross_entropy", *PROXY_LOSSES, *PAIR_LOSSES)


class EvalConfig(_Section):
    recall_at: list[int] | Auto = "auto"  # auto: the dataset's standard K set
    flip: bool = True  # sum features of the image and its horizontal flip
    every: int = Field(0, ge=0)  # also evaluate the test split every N epochs (curves only)
    batch_size: int = Field(128, ge=1)

    @field_validator("recall_at")
    @classmethod
    def _positive_ks(cls, v: list[int] | str) -> list[int] | str:
        if isinstance(v, list) and (not v or min(v) < 1):
            raise ValueError("must be 'auto' or a non-empty list of positive integers")
        return v


class OutputConfig(_Section):
    dir: str = "runs"
    name: str = ""  # run-folder prefix; default: the recipe file's name
    log_with: list[str] = []  # accelerate trackers, e.g. ["tensorboard"]; they log into the run folder

    @field_validator("log_with")
    @classmethod
    def _known_trackers(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in TRACKERS:
                hint = closest(name, sorted(TRACKERS))
                raise ValueError(f"unknown tracker {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
                                 + f" (one of {', '.join(sorted(TRACKERS))})")
        return v


class Recipe(_Section):
    model: ModelConfig = ModelConfig()
    prune: PruneConfig = PruneConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    autolr: AutolrConfig = AutolrConfig()
    loss: LossConfig = LossConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()

    def to_toml(self) -> str:
        """The fully resolved recipe as TOML: `autolr run <run>/recipe.toml` reproduces the run."""
        lines = []
        for section, values in self.model_dump().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
