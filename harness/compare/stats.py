"""The arithmetic behind a verdict: tolerances for near-deterministic figures, an interval for noisy ones.

Memory is quantized and near-deterministic (an allocator arena is 1 MiB; process RSS moves ~0.4 %), so
it is judged by a delta against a tolerance sized to that granularity, not by a z-score. Time is noisy,
so it is judged by a bootstrap interval on the ratio of medians, with a fixed seed so a verdict is
reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REGRESSED = "regressed"
IMPROVED = "improved"
UNCHANGED = "unchanged"


def tolerance(base: float, abs_tol: float, rel_tol: float) -> float:
    """max(absolute, relative x |baseline|): e.g. max(1 MiB, 0.5 %) for memory."""
    return max(abs_tol, rel_tol * abs(base))


def judge_delta(base: float, cur: float, tol: float) -> str:
    """Lower is better: regressed if cur exceeds base by more than tol, improved if below by more."""
    if cur - base > tol:
        return REGRESSED
    if base - cur > tol:
        return IMPROVED
    return UNCHANGED


@dataclass(frozen=True)
class RatioInterval:
    """median(current) / median(baseline) and its bootstrap confidence interval."""

    ratio: float
    low: float
    high: float


def median_ratio_interval(
    base: Sequence[float], cur: Sequence[float], *, confidence: float, resamples: int, seed: int
) -> RatioInterval:
    """Percentile bootstrap of the ratio of medians, each side resampled on its own."""
    b, c = np.asarray(base, dtype=float), np.asarray(cur, dtype=float)
    rng = np.random.default_rng(seed)
    b_med = np.median(rng.choice(b, size=(resamples, b.size), replace=True), axis=1)
    c_med = np.median(rng.choice(c, size=(resamples, c.size), replace=True), axis=1)
    ratios = c_med / b_med
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return RatioInterval(float(np.median(c) / np.median(b)), float(low), float(high))


def judge_ratio(interval: RatioInterval, threshold: float) -> str:
    """Lower is better (step time). A change counts only when the median ratio moved past the threshold
    AND the interval excludes 1 (asv's rule: big enough and significant)."""
    if interval.ratio > 1.0 + threshold and interval.low > 1.0:
        return REGRESSED
    if interval.ratio < 1.0 - threshold and interval.high < 1.0:
        return IMPROVED
    return UNCHANGED
