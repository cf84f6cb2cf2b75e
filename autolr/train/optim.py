"""The optimizer: timm's `create_optimizer_v2`, given the project's own param groups (one per block,
stem, neck and head), so that every schedule, AutoLR included, keeps writing each group's LR.

Given groups (not a model), timm passes them through untouched: their `name`, `base_lr` and `lr` keys
stay, and its `filter_bias_and_bn` does not apply. So `train.weight_decay_1d = false` is done here: each
group's norms, biases and the model's `no_weight_decay()` tensors move into a twin group named
`no_decay:<name>` with weight decay 0, whose LR follows its group's (`sync_no_decay`, before every LR
write). Code that looks groups up by name (`block*`, `stem`, `neck`, `head`) never sees the twins.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from autolr.errors import AutolrError

log = logging.getLogger("autolr")

NO_DECAY = "no_decay:"  # prefix of a twin group's name
# Step counters that some timm optimizers keep in their param groups, not in per-parameter state:
# Adan and Lamb create "step" in step(); Lookahead counts "lookahead_step" from 0.
_GROUP_COUNTERS = {"step": None, "lookahead_step": 0}


def build_optimizer(groups: list[dict[str, Any]], t: Any, no_weight_decay: set[int] = frozenset()) -> torch.optim.Optimizer:
    """timm's optimizer `t.optimizer` over `groups`, with the recipe's LR, weight decay, momentum, betas, eps.

    `t` is the recipe's [train] section. `no_weight_decay`: ids of parameters that timm's convention
    exempts from decay besides 1-d ones (a ViT's pos_embed, cls_token); used when `t.weight_decay_1d` is off.
    """
    from timm.optim import create_optimizer_v2

    if not t.weight_decay_1d:
        groups = split_no_decay(groups, no_weight_decay)
    kwargs: dict[str, Any] = {}
    if t.betas != "auto":
        kwargs["betas"] = tuple(t.betas)
    if t.eps != "auto":
        kwargs["eps"] = t.eps
    if t.optimizer.lower() == "sgd":  # the paper's SGD; timm's "momentum" and "nesterov" variants fix this themselves
        kwargs["nesterov"] = t.nesterov and t.momentum > 0
    try:
        return create_optimizer_v2(groups, opt=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum,
                                   **kwargs)
    except ImportError as e:  # bnb*, fused*: bitsandbytes or apex
        raise AutolrError(f"train.optimizer = {t.optimizer!r} needs a package that is not installed ({e});"
                          " install it or pick another optimizer") from None


def split_no_decay(groups: list[dict[str, Any]], exempt: set[int] = frozenset()) -> list[dict[str, Any]]:
    """Each group, followed by its twin `no_decay:<name>` holding its 1-d parameters (norms, biases) and
    those in `exempt`, at weight decay 0 and the same LRs. Groups left empty are dropped."""
    out = []
    for g in groups:
        decay = [p for p in g["params"] if p.ndim > 1 and id(p) not in exempt]
        rest = [p for p in g["params"] if p.ndim <= 1 or id(p) in exempt]
        if decay:
            out.append({**g, "params": decay})
        if rest:
            out.append({**g, "params": rest, "name": NO_DECAY + g["name"], "weight_decay": 0.0})
    return out


def is_twin(group: dict[str, Any]) -> bool:
    return group["name"].startswith(NO_DECAY)


def named_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The param groups by which LRs are set and logged (the no-decay twins left out)."""
    return [g for g in optimizer.param_groups if not is_twin(g)]


def sync_no_decay(optimizer: torch.optim.Optimizer) -> None:
    """Every twin group takes its group's `base_lr` (which schedules and AutoLR write by name)."""
    by_name = {g["name"]: g for g in optimizer.param_groups if not is_twin(g)}
    for g in optimizer.param_groups:
        if is_twin(g) and g["name"][len(NO_DECAY):] in by_name:
            g["base_lr"] = by_name[g["name"][len(NO_DECAY):]]["base_lr"]


def base_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds the state: accelerate's wrapper and timm's Lookahead unwrapped."""
    while True:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_base_optimizer", None)
        if inner is None:
            return optimizer
        optimizer = inner


def reset_state(optimizer: torch.optim.Optimizer) -> None:
    """Forget what the optimizer has accumulated: momentum buffers, Adam's moments and step counts,
    Lookahead's slow weights (per-parameter state), and the step counters Adan, Lamb and Lookahead keep
    in their param groups. The LRs and other hyper-parameters stay."""
    opt = base_optimizer(optimizer)
    opt.state.clear()  # Lookahead's own `.state` is an unused dict: its slow weights live in the base's
    for g in opt.param_groups:
        for key, fresh in _GROUP_COUNTERS.items():
            if key in g:
                if fresh is None:
                    del g[key]
                else:
                    g[key] = fresh


def snapshot_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state (per-parameter state and param groups, step counters included),
    its tensors cloned on their device."""
    return _clone(optimizer.state_dict())


def restore_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Back to a `snapshot_state`, which stays intact for the next restore (its tensors are cloned again:
    torch's `load_state_dict` keeps tensors that already sit on the parameter's device and dtype)."""
    optimizer.load_state_dict(_clone(state))


def _clone(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: (v if k == "params" else _clone(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return copy.copy(obj)


def describe(optimizer: torch.optim.Optimizer, t: Any) -> str:
    """One log line: which optimizer, how many groups, what decays."""
    opt = base_optimizer(optimizer)
    twins = sum(1 for g in opt.param_groups if is_twin(g))
    decay = f"weight decay {t.weight_decay:g}" + ("" if t.weight_decay_1d else ", none on norms and biases")
    hyper = {k: opt.defaults[k] for k in ("betas", "eps", "momentum", "nesterov") if k in opt.defaults}
    shown = ", ".join(f"{k} {v}" for k, v in hyper.items())
    return (f"optimizer {type(opt).__name__} (timm {t.optimizer!r}): {len(opt.param_groups) - twins} param groups"
            + (f" (+{twins} without decay)" if twins else "") + f", {decay}" + (f", {shown}" if shown else ""))


def no_weight_decay_ids(net) -> set[int]:
    """The backbone tensors timm exempts from weight decay besides 1-d ones (a ViT's pos_embed, cls_token)."""
    names = set(getattr(net.backbone, "no_weight_decay", lambda: set())())
    return {id(p) for n, p in net.backbone.named_parameters() if n in names}
