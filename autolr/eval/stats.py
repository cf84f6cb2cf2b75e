"""Statistics for comparing runs over seeds: means, Student-t intervals, paired differences.

Pure functions on lists of numbers (no torch), so a study's tables can be recomputed from its
`study.csv` alone. Intervals are two-sided Student-t intervals (`scipy.stats.t`); with one value no
interval exists and the functions say so with `None` rather than inventing a width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

CONFIDENCE = 0.95
SAME = 1e-9  # a spread this small relative to the values is rounding, not variation


@dataclass(frozen=True)
class Estimate:
    """The mean of n values and its Student-t interval (low/high None when n < 2)."""

    mean: float
    low: float | None
    high: float | None
    sd: float | None
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """An arm against the baseline over the same seeds: the differences' estimate, wins and losses."""

    diff: Estimate  # of arm - baseline, seed by seed
    wins: int  # seeds where the arm is higher
    losses: int  # seeds where it is lower
    ties: int
    p_value: float | None  # two-sided paired t-test; None when n < 2 or every difference is equal

    def as_dict(self) -> dict[str, Any]:
        return {**self.diff.as_dict(), "wins": self.wins, "losses": self.losses, "ties": self.ties,
                "p_value": self.p_value}


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean +- t_{(1+c)/2, n-1} x sd / sqrt(n), sd with n - 1 degrees of freedom."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values to estimate from")
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(mean, None, None, None, n)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1))
    if sd <= SAME * max(abs(mean), max(abs(x) for x in values)):
        sd = 0.0  # equal values up to rounding (0.62 - 0.60 is not exactly 0.02 on every seed)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, sd, n)


def paired_difference(arm: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """arm[i] - baseline[i] for each seed i: mean, t-interval, wins/losses/ties and the paired t-test."""
    from scipy import stats

    if len(arm) != len(baseline):
        raise ValueError(f"paired values need the same seeds: {len(arm)} vs {len(baseline)}")
    diffs = [a - b for a, b in zip(arm, baseline, strict=True)]
    estimate = t_interval(diffs, confidence)
    p = None
    if len(diffs) >= 2 and estimate.sd:  # scipy's test is undefined (nan) when every difference is equal
        p = float(stats.ttest_rel(arm, baseline).pvalue)
    return Paired(estimate, sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), sum(d == 0 for d in diffs), p)
