"""AutoLR's pure functions, checked against numbers worked out by hand."""

import logging

import pytest
import torch

from autolr.train.autolr import (
    TARGET_FLOOR,
    accept,
    block_variations,
    initial_targets,
    relax_tau,
    renew_lrs,
    repair_targets,
    sorting_quality,
    weight_variation,
)


def test_weight_variation_by_hand():
    # block 1: one 2x2 tensor moved by [3, 4, 0, 0] -> norm 5 over 4 elements = 1.25
    # block 2: two tensors (2 + 2 elements... as 1x2 each) moved by [1, 0] and [0, 0] -> 1 / 4 = 0.25
    b1 = [torch.zeros(2, 2)]
    a1 = [torch.tensor([[3.0, 4.0], [0.0, 0.0]])]
    b2 = [torch.zeros(1, 2), torch.zeros(1, 2)]
    a2 = [torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)]
    assert weight_variation([b1, b2], [a1, a2]) == pytest.approx([1.25, 0.25])


def test_a_block_with_only_norm_parameters_moves_zero_on_the_weights_device():
    """A block whose parameters are all 1-d (norms, biases) passes no weights: v = 0, as a tensor on the
    other blocks' device (meta here: a CPU scalar would not stack with them, as on a GPU)."""
    before = [[torch.zeros(2, 2, device="meta")], []]
    after = [[torch.ones(2, 2, device="meta")], []]
    out = block_variations(before, after)
    assert out.device.type == "meta" and out.shape == (2,)
    assert weight_variation([[torch.zeros(2, 2)], []], [[torch.full((2, 2), 2.0)], []]) == pytest.approx([1.0, 0.0])
    assert weight_variation([[]], [[]]) == [0.0]  # only norm blocks at all
    assert weight_variation([], []) == []


def test_sorting_quality_by_hand():
    assert sorting_quality([1, 2, 3, 4]) == 1.0
    assert sorting_quality([4, 3, 2, 1]) == pytest.approx(1 - 2 / 16 * (3 + 1 + 1 + 3))  # 0.0
    assert sorting_quality([1, 3, 2, 4]) == pytest.approx(1 - 4 / 16)  # one adjacent swap: 4 / K^2
    v = list(range(14))
    v[5], v[6] = v[6], v[5]
    assert sorting_quality(v) == pytest.approx(1 - 4 / 196)  # 0.9796 at K = 14
    assert sorting_quality([2, 2, 2]) == 1.0  # ties keep index order: sorted
    assert sorting_quality([5]) == 1.0  # K = 1
    assert sorting_quality([2, 1]) == pytest.approx(1 - 2 / 4 * 2)  # K = 2 swapped: 0.0


def test_initial_ramp_by_hand():
    # K = 3, v = [1, 2, 10]: alpha*min = 2, beta*max = 4, d = 1 -> [2, 3, 4]
    assert initial_targets([1, 2, 10], alpha=2.0, beta=0.4) == pytest.approx([2, 3, 4])
    # K = 2, v = [0.5, 20]: 1 -> 8, d = 7
    assert initial_targets([0.5, 20]) == pytest.approx([1, 8])
    assert initial_targets([3.0]) == [3.0]


def test_ramp_that_does_not_ascend_falls_back_to_repair(caplog):
    # beta * max = 0.4 * 4 = 1.6 <= alpha * min = 2 * 1 = 2: not ascending
    with caplog.at_level(logging.WARNING, logger="autolr"):
        targets = initial_targets([4, 1, 2])
    assert "does not ascend" in caplog.text
    assert targets == repair_targets([4, 1, 2])


def test_repair_by_hand():
    # K = 4, v = [1, 3, 2, 4]: d = 1, centre c = 3 (1-based) -> index 2
    # up: k = 4: 2 <= 4 ok. down: k = 2: vbar3 = 2 < vbar2 = 3 -> vbar2 = 2 - 1 = 1; k = 1: 1 < 1? no
    assert repair_targets([1, 3, 2, 4]) == pytest.approx([1, 1, 2, 4])
    # K = 5, v = [5, 4, 3, 2, 1]: d = 1, c = 3 -> index 2 (value 3)
    # up: k4: 3 > 2 -> 4; k5: 4 > 1 -> 5. down: k2: 3 < 4 -> 2; k1: 2 < 5 -> 1
    assert repair_targets([5, 4, 3, 2, 1]) == pytest.approx([1, 2, 3, 4, 5])


def test_repair_cascade_below_zero_is_floored():
    # K = 3, v = [9, 9, 0.5]: d = 4.25, c = 2 -> index 1. up: 9 > 0.5 -> 13.25.
    # down: index 0: 9 < 9? no. Now a case that goes negative: v = [5, 6, 0.1, 0.2]
    # d = (6 - 0.1) / 3 = 1.9667, c = 3 -> index 2. up: 0.1 <= 0.2 ok. down: index 1: 0.1 < 6 -> 0.1 - 1.9667 < 0
    # index 0: -1.8667 < 5 -> -3.8333: both floored
    t = repair_targets([5, 6, 0.1, 0.2])
    assert t[:2] == [TARGET_FLOOR, TARGET_FLOOR]
    assert t[2:] == pytest.approx([0.1, 0.2])
    assert all(x > 0 for x in t)


def test_renew_by_hand_with_clamps_and_a_still_block(caplog):
    with caplog.at_level(logging.INFO, logger="autolr"):
        lrs = renew_lrs([1e-3, 1e-3, 1e-3, 0.05], [2.0, 0.0, 1.0, 1.0], [4.0, 1.0, 1e-5, 10.0], min_lr=1e-6, max_lr=0.1)
    assert lrs == pytest.approx([2e-3, 1e-3, 1e-6, 0.1])  # x2; kept; 1e-8 -> min; 0.5 -> max
    assert "did not move" in caplog.text and "clamped" in caplog.text


def test_acceptance_rules_at_the_boundary():
    assert accept(0.9396, 0.94) and not accept(0.9396, 0.94, strict=True)
    assert not accept(0.9394, 0.94)
    assert accept(0.95, 0.94, strict=True) and not accept(0.94, 0.94, strict=True)
    assert relax_tau(0.94) == pytest.approx(0.9306)
    assert relax_tau(0.8) == 0.8 and relax_tau(0.94, strict=True) == 0.94


def test_small_k_and_ties_in_targets():
    """Hand-computed: K = 1 and 2 for both target rules, and a tie that makes the ramp flat."""
    from autolr import initial_targets, repair_targets
    from autolr.train.autolr import TARGET_FLOOR

    assert initial_targets([0.3]) == [0.3]
    assert initial_targets([0.1, 1.0]) == pytest.approx([0.2, 0.4])  # 2 * 0.1 up to 0.4 * 1.0
    # all equal: beta * max = 0.4 <= alpha * min = 2, so the repair rule, which leaves a sorted v alone
    assert initial_targets([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]
    assert repair_targets([0.5]) == [0.5]
    # K = 2: centre is block 2; block 1 is faster than block 2, so it becomes 1.0 - d = 0, floored
    assert repair_targets([2.0, 1.0]) == [TARGET_FLOOR, 1.0]
