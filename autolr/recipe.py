"""Recipes: TOML files parsed into one typed schema that holds every default.

A recipe is pure data. Unknown sections or keys and wrong types are `AutolrError`s that name the key
path, the bad value and the closest valid key.
"""

from __future__ import annotations

import difflib
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autolr.errors import AutolrError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
                hint = _closest(name, sorted(TRACKERS))
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
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def shipped_recipes() -> dict[str, Path]:
    """Recipes that ship inside the package, by name."""
    folder = files("autolr.recipes")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def resolve_recipe_path(recipe: str | Path) -> Path:
    """A path on disk, or the name of a shipped recipe (`quickstart`)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if path.suffix == "" and str(recipe) in shipped:
        return shipped[str(recipe)]
    hint = _closest(str(recipe), list(shipped))
    raise AutolrError(
        f"recipe {str(recipe)!r} not found: give a path to a .toml file or a shipped recipe name"
        f" ({', '.join(sorted(shipped))})" + (f"; did you mean {hint}?" if hint else "")
    )


def load_recipe(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Read a recipe file (or shipped recipe name), apply `section.key=value` overrides, validate."""
    path = resolve_recipe_path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise AutolrError(f"{path}: not valid TOML ({e})") from None
    for item in overrides:
        _apply_override(data, item)
    try:
        recipe = parse_recipe(data, source=str(path))
    except AutolrError as e:
        if overrides and str(e).startswith(f"{path}:"):  # the file alone may be fine: then blame the --set
            try:
                parse_recipe(tomllib.loads(path.read_text()), source=str(path))
            except AutolrError:
                raise e from None
            raise AutolrError("--set" + str(e)[len(str(path)):]) from None
        raise
    if not recipe.output.name:
        recipe.output.name = path.parent.name.rsplit("-", 2)[0] if path.name == "recipe.toml" else path.stem
    return recipe


def parse_recipe(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a recipe given as nested dicts; errors name the key path and the fix."""
    _check_keys(data)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        loc = errors[0]["loc"][:2]  # section.key; a union type adds its member names after that
        reasons = [_reason(err) for err in errors if err["loc"][:2] == loc]
        index = "".join(f"[{p}]" for p in errors[0]["loc"][2:] if isinstance(p, int))
        key = ".".join(str(p) for p in loc) + index
        value = data.get(loc[0], {}).get(loc[1]) if len(loc) == 2 and not index else errors[0].get("input")
        reason = " or ".join(dict.fromkeys(reasons))
        if len(loc) == 1:  # a rule across keys of one section
            raise AutolrError(f"{source}: [{loc[0]}] {reason.removeprefix('value error, ')}") from None
        raise AutolrError(f"{source}: bad value for {key}: {value!r} ({reason})") from None
    _check_training(recipe, source)
    return recipe


def _check_training(recipe: Recipe, source: str) -> None:
    """The optimizer and the loss: names, the arguments they take, the batches a pair loss needs."""
    t = recipe.train
    _check_optimizer(t, source)
    if t.loss not in LOSSES:
        hint = _closest(t.loss, list(LOSSES))
        raise AutolrError(f"{source}: train.loss = {t.loss!r} is not a loss" + (f"; did you mean {hint!r}?" if hint else "")
                          + f" (one of {', '.join(LOSSES)})")
    takes = loss_keys(t.loss, recipe.loss.miner)
    given = [k for k, v in recipe.loss.model_dump().items() if v != "auto" and k not in takes]
    if given:
        what = f"it takes {', '.join(takes)}" if takes else "it takes none: set train.loss to a metric loss"
        raise AutolrError(f"{source}: loss.{given[0]} = {getattr(recipe.loss, given[0])!r} is not an argument of"
                          f" train.loss = {t.loss!r} ({what})")
    m, batch = recipe.data.samples_per_class, recipe.data.batch_size
    if t.loss in PAIR_LOSSES and m < 2:
        raise AutolrError(f"{source}: train.loss = {t.loss!r} compares the images of a batch, which needs several"
                          f" images per class in it: set data.samples_per_class (e.g. 4; now {m})")
    if t.loss in PAIR_LOSSES and batch < 2 * m:
        raise AutolrError(f"{source}: train.loss = {t.loss!r} needs 2 classes or more per batch: data.batch_size ="
                          f" {batch} holds one class of data.samples_per_class = {m}; raise it to {2 * m} or more")
    if t.loss != "cross_entropy" and recipe.prune.mode == "search" and recipe.prune.estimator == "heads":
        raise AutolrError(f"{source}: prune.estimator = 'heads' trains a cross-entropy head at every cut; with"
                          f" train.loss = {t.loss!r} use prune.estimator = 'full'")


def loss_keys(name: str, miner: str = "auto") -> list[str]:
    """The [loss] keys that train.loss = `name` reads: its own, and for a pair loss its miner's."""
    if name in PROXY_LOSSES:
        return list(PROXY_LOSSES[name])
    if name in PAIR_LOSSES:
        return [*PAIR_LOSSES[name], "miner", *MINER_DEFAULTS[PAPER_MINERS[name] if miner == "auto" else miner]]
    return []


def _check_optimizer(t: TrainConfig, source: str) -> None:
    """train.optimizer is one timm builds (did-you-mean otherwise); betas and eps only where it has them."""
    if t.optimizer == "sgd":  # the default: no timm import (4 s) just to validate a recipe
        has_betas, num_betas, has_eps = False, 0, False
    else:
        info = _timm_optimizer(t.optimizer, source)
        has_betas, num_betas, has_eps = info.has_betas, info.num_betas, info.has_eps
    if t.betas != "auto" and not has_betas:
        raise AutolrError(f"{source}: train.betas is set, but train.optimizer = {t.optimizer!r} has no betas: remove it")
    if t.betas != "auto" and (len(t.betas) != num_betas or not all(0 <= b < 1 for b in t.betas)):
        raise AutolrError(f"{source}: train.betas = {t.betas}: {t.optimizer} takes {num_betas} betas, each in [0, 1)")
    if t.eps != "auto" and not has_eps:
        raise AutolrError(f"{source}: train.eps is set, but train.optimizer = {t.optimizer!r} has no eps: remove it")
    if t.eps != "auto" and t.eps <= 0:
        raise AutolrError(f"{source}: train.eps = {t.eps} must be positive")


def _timm_optimizer(name: str, source: str):
    from timm.optim import get_optimizer_info, list_optimizers

    base = name.lower().removeprefix("lookahead_")  # timm wraps any optimizer in Lookahead this way
    known = list_optimizers()
    if base not in known:
        hint = _closest(base, known)
        raise AutolrError(f"{source}: train.optimizer = {name!r} is not a timm optimizer"
                          + (f"; did you mean {hint!r}?" if hint else "") + " (see timm.optim.list_optimizers())")
    info = get_optimizer_info(base)
    if info.second_order:
        raise AutolrError(f"{source}: train.optimizer = {name!r} needs second-order gradients (backward with"
                          " create_graph), which autolr's loop does not compute: pick another optimizer")
    return info


def _reason(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "literal_error":
        return msg.replace("Input should be", "expected")
    return msg[0].lower() + msg[1:] if msg else err["type"]


def _check_keys(data: dict[str, Any]) -> None:
    sections = Recipe.model_fields
    for section, values in data.items():
        if section not in sections:
            hint = _closest(section, list(sections))
            raise AutolrError(f"unknown section [{section}]" + (f"; did you mean [{hint}]?" if hint else ""))
        if not isinstance(values, dict):
            raise AutolrError(f"[{section}] must be a table of keys, got {values!r}")
        fields = sections[section].annotation.model_fields
        for key in values:
            if key not in fields:
                raise AutolrError(f"unknown key {section}.{key}; {_suggest(section, key)}")


def _suggest(section: str, key: str) -> str:
    """The closest valid key: first in the same section, then in any section."""
    sections = Recipe.model_fields
    hint = _closest(key, list(sections[section].annotation.model_fields))
    if hint:
        return f"did you mean {section}.{hint}?"
    everywhere = [f"{s}.{k}" for s, f in sections.items() for k in f.annotation.model_fields]
    hint = _closest(key, [p.split(".")[1] for p in everywhere])
    if hint:
        return f"did you mean {next(p for p in everywhere if p.endswith('.' + hint))}?"
    return f"valid keys in [{section}]: {', '.join(sections[section].annotation.model_fields)}"


def _closest(word: str, options: list[str]) -> str | None:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def _apply_override(data: dict[str, Any], item: str) -> None:
    """`section.key=value`, the value in TOML syntax; a bare word is taken as a string."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise AutolrError(f"--set {item!r}: expected section.key=value, e.g. --set train.epochs=5")
    path, raw = item.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    data.setdefault(section, {})
    if not isinstance(data[section], dict):
        raise AutolrError(f"--set {item!r}: [{section}] is not a table")
    data[section][key] = value
