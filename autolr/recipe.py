"""Recipes: TOML files parsed into one typed schema that holds every default (`autolr.schema`).

A recipe is pure data. Unknown sections or keys and wrong types are `AutolrError`s that name the key
path, the bad value and the closest valid key.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autolr.errors import AutolrError
from autolr.schema import (  # noqa: F401 - the sections are imported from here throughout
    LOSSES,
    MINER_DEFAULTS,
    PAIR_LOSSES,
    PAPER_MINERS,
    PROXY_LOSSES,
    TRACKERS,
    AutolrConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OutputConfig,
    PruneConfig,
    Recipe,
    TrainConfig,
    closest,
    toml_value,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
    hint = closest(str(recipe), list(shipped))
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
        hint = closest(t.loss, list(LOSSES))
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
        hint = closest(base, known)
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
            hint = closest(section, list(sections))
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
    hint = closest(key, list(sections[section].annotation.model_fields))
    if hint:
        return f"did you mean {section}.{hint}?"
    everywhere = [f"{s}.{k}" for s, f in sections.items() for k in f.annotation.model_fields]
    hint = closest(key, [p.split(".")[1] for p in everywhere])
    if hint:
        return f"did you mean {next(p for p in everywhere if p.endswith('.' + hint))}?"
    return f"valid keys in [{section}]: {', '.join(sections[section].annotation.model_fields)}"


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
