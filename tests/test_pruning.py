"""Global pruning on a small network: 0.8^k remain, the lowest scores go first, pruned weights stay zero."""

import pytest
import torch
from torch import nn

from autolr.train import weight_pruning as pruning


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def pruned_net(cycles=0, rate=0.2):
    model = net()
    targets = pruning.prunable(model)
    pruning.reparametrize(targets)
    for _ in range(cycles):
        pruning.prune_global(targets, rate, pruning.magnitude_scores(targets))
    return model, targets


def test_prunable_weights_are_conv_and_linear_only():
    model = net()
    assert [type(m) for m, _ in pruning.prunable(model)] == [nn.Conv2d, nn.Linear]


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_remaining_after_k_cycles_is_0_8_to_the_k(k):
    model, targets = pruned_net(k)
    total = sum(m.numel() for m in pruning.masks(targets))
    assert abs(pruning.remaining(targets) - 0.8**k) <= k / total  # one weight of rounding per cycle
    assert sum(len(m._forward_pre_hooks) for m, _ in targets) == len(targets)  # no mask copies pile up


def test_pruning_is_global_and_drops_the_lowest_scores():
    model, targets = pruned_net()
    with torch.no_grad():
        model[0].weight_orig.mul_(1e-6)  # the conv's weights are all smaller than the linear's
    pruning.prune_global(targets, 0.05, pruning.magnitude_scores(targets))
    conv, linear = (m.sum().item() for m in pruning.masks(targets))
    removed = round(0.05 * (model[0].weight_orig.numel() + model[4].weight_orig.numel()))  # fewer than the conv has
    assert conv == model[0].weight_orig.numel() - removed and linear == model[4].weight_orig.numel()


def test_movement_scores_drop_the_weights_that_moved_least():
    model, targets = pruned_net()
    before = pruning.weights(targets)
    with torch.no_grad():
        model[4].weight_orig[0].add_(1.0)  # only row 0 of the linear layer moves
    pruning.prune_global(targets, 0.5, pruning.movement_scores(targets, before))
    assert bool(pruning.masks(targets)[1][0].all())


def test_pruned_weights_stay_zero_through_training_state_dict_and_fold():
    model, targets = pruned_net(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    masks = [m.clone() for m in pruning.masks(targets)]
    for (module, _), mask in zip(targets, masks, strict=True):
        assert bool((module.weight_orig[mask == 0] == 0).all())  # no gradient, and decay of 0 is 0
    fresh = net()
    fresh_targets = pruning.prunable(fresh)
    pruning.reparametrize(fresh_targets)
    fresh.load_state_dict(model.state_dict())  # what a resume does
    assert all(torch.equal(a, b) for a, b in zip(pruning.masks(fresh_targets), masks, strict=True))
    pruning.fold(fresh_targets)
    assert "0.weight" in fresh.state_dict() and "0.weight_mask" not in fresh.state_dict()
    for (module, _), mask in zip(fresh_targets, masks, strict=True):
        assert bool((module.weight[mask == 0] == 0).all()) and bool((module.weight[mask == 1] != 0).all())
