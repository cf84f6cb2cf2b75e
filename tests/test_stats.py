"""The study's statistics against numbers worked out by hand (t quantiles from tables)."""

from __future__ import annotations

import math

import pytest

from autolr.eval.stats import paired_difference, t_interval

T_975_DF2 = 4.302653  # Student-t 97.5% quantile, 2 degrees of freedom
T_975_DF3 = 3.182446


def test_t_interval_by_hand():
    e = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, sem 1 / sqrt(3)
    assert e.mean == pytest.approx(2.0)
    assert e.sd == pytest.approx(1.0)
    half = T_975_DF2 / math.sqrt(3)
    assert (e.low, e.high) == pytest.approx((2 - half, 2 + half), abs=1e-6)
    assert e.n == 3


def test_t_interval_other_confidence_and_size():
    e = t_interval([0.80, 0.82, 0.81, 0.85])  # mean 0.82, sd sqrt(0.00140 / 3)
    sd = math.sqrt((0.02**2 + 0 + 0.01**2 + 0.03**2) / 3)
    assert e.sd == pytest.approx(sd)
    assert e.high - e.mean == pytest.approx(T_975_DF3 * sd / 2, rel=1e-6)
    assert t_interval([1.0, 2.0, 3.0], confidence=0.5).high < e.mean + 10  # a narrower level is accepted
    assert t_interval([1.0, 2.0, 3.0], 0.5).high - 2 < T_975_DF2 / math.sqrt(3)


def test_one_value_has_no_interval():
    e = t_interval([0.7])
    assert e.mean == 0.7 and e.low is None and e.high is None and e.sd is None and e.n == 1


def test_constant_values_give_a_zero_width_interval():
    e = t_interval([0.5, 0.5, 0.5])
    assert (e.low, e.high, e.sd) == (0.5, 0.5, 0.0)


def test_paired_difference_by_hand():
    p = paired_difference([0.5, 0.6, 0.7], [0.4, 0.6, 0.5])  # differences 0.1, 0, 0.2
    assert p.diff.mean == pytest.approx(0.1)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert (p.diff.low, p.diff.high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-6)
    assert (p.wins, p.losses, p.ties) == (2, 0, 1)
    # t = 0.1 / (0.1 / sqrt 3) = sqrt 3 with 2 df: two-sided p = 1 - 2 / 3 * ... = 0.2254 (tables)
    assert p.p_value == pytest.approx(0.225403, abs=1e-5)


def test_pairing_is_by_position_not_by_sorting():
    # the same two sets of values, paired differently, give different differences
    a = paired_difference([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert (a.wins, a.losses, a.ties) == (1, 1, 1)
    assert a.diff.mean == pytest.approx(0.0)
    assert a.diff.sd == pytest.approx(2.0)


def test_paired_difference_of_identical_arms():
    p = paired_difference([0.3, 0.4], [0.3, 0.4])
    assert (p.diff.mean, p.diff.low, p.diff.high, p.p_value) == (0.0, 0.0, 0.0, None)
    assert p.ties == 2


def test_paired_difference_needs_the_same_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([0.1, 0.2], [0.1])


def test_no_values_is_an_error():
    with pytest.raises(ValueError):
        t_interval([])


def test_rounding_noise_is_no_spread():
    diffs = paired_difference([0.62, 0.67, 0.59], [0.60, 0.65, 0.57])  # 0.02 each, up to float rounding
    assert diffs.diff.sd == 0.0 and diffs.diff.low == diffs.diff.high == pytest.approx(0.02)
    assert diffs.p_value is None and diffs.wins == 3
