"""Schedules: each curve against torch's own scheduler, proportions kept, every name handled."""

import math
import typing

import pytest
import torch

from autolr.recipe import TrainConfig
from autolr.train.schedules import apply_lrs, layer_decay_scales, lr_factor

STEPS = 4


def cfg(**kw):
    return TrainConfig(**({"epochs": 12, "lr": 0.01, "lr_min": 0.001} | kw))


def ours(t):
    return [t.lr * lr_factor(t, epoch=e, step=s, steps_per_epoch=STEPS) for e in range(t.epochs) for s in range(STEPS)]


def torch_curve(make, t, per_epoch=False):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched = make(opt)
    out = []
    for _ in range(t.epochs):
        for _ in range(STEPS):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if not per_epoch:
                sched.step()
        if per_epoch:
            sched.step()
    return out


def test_multistep_matches_torch():
    t = cfg(schedule="multistep", milestones=[4, 9], gamma=0.2)
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 9], 0.2), t, per_epoch=True)
    assert ours(t) == pytest.approx(ref)


def test_sgdr_matches_cosine_warm_restarts():
    t = cfg(schedule="sgdr", restarts=2)  # 3 cycles of 4 epochs
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=4 * STEPS, eta_min=0.001), t)
    assert ours(t) == pytest.approx(ref)


def test_cyclic_matches_triangular_cyclic_lr():
    t = cfg(schedule="cyclic", cycles=3)  # period 4 epochs = 16 steps, 8 up
    ref = torch_curve(
        lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.001, max_lr=0.01, step_size_up=8, cycle_momentum=False), t
    )
    assert ours(t) == pytest.approx(ref)


def test_cosine_matches_cosine_annealing_and_warms_up():
    t = cfg(schedule="cosine")
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12 * STEPS, eta_min=0.001), t)
    assert ours(t) == pytest.approx(ref)
    w = cfg(schedule="cosine", warmup_epochs=2)
    curve = ours(w)
    assert curve[: 2 * STEPS] == pytest.approx([0.01 * (i + 1) / (2 * STEPS) for i in range(2 * STEPS)])
    assert curve[2 * STEPS] == pytest.approx(0.01) and curve[-1] > 0.001


def test_autolr_decay_and_constant():
    t = cfg(schedule="autolr", milestones=[10], gamma=0.2, warmup_epochs=3)  # warmup is not AutoLR's
    assert lr_factor(t, epoch=9) == 1 and lr_factor(t, epoch=10) == pytest.approx(0.2)
    assert lr_factor(cfg(schedule="constant"), epoch=7, step=3, steps_per_epoch=4) == 1


def test_every_schedule_keeps_group_proportions():
    names = typing.get_args(TrainConfig.model_fields["schedule"].annotation)
    assert set(names) == {"constant", "step", "multistep", "cyclic", "sgdr", "cosine", "layer_decay", "autolr"}
    for name in names:
        t = cfg(schedule=name)
        opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "base_lr": b} for b in (0.01, 0.1)], lr=1)
        for e in range(t.epochs):
            apply_lrs(opt, lr_factor(t, epoch=e, step=1, steps_per_epoch=STEPS))
            a, b = (g["lr"] for g in opt.param_groups)
            assert b == pytest.approx(10 * a) and a > 0, name


def test_layer_decay_matches_timm():
    import timm
    from timm.optim import param_groups_layer_decay

    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    groups = param_groups_layer_decay(model, weight_decay=0.0, layer_decay=0.75)
    timm_scales = sorted({g["lr_scale"] for g in groups})
    ours_scales = sorted(set(layer_decay_scales(8, 0.75)))
    assert ours_scales == pytest.approx(timm_scales)
    assert layer_decay_scales(2, 0.5) == [0.125, 0.25, 0.5, 1.0]


def test_lr_min_above_lr_is_an_error():
    with pytest.raises(ValueError, match="train.lr_min"):
        lr_factor(cfg(schedule="cosine", lr_min=0.1), epoch=1)
    assert not math.isnan(lr_factor(cfg(schedule="cyclic"), epoch=0))
