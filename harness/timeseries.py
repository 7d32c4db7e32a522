"""Thinning sampled memory series without losing their peaks (used by the runner and the report)."""

from __future__ import annotations

from collections.abc import Sequence


def extreme_indices(y: Sequence[float], max_points: int) -> list[int]:
    """Indices to keep so that at most `max_points` remain: the lowest and highest sample of each of
    max_points // 2 equal buckets, in order. A spike, however short, is never thinned away."""
    n = len(y)
    if n <= max_points:
        return list(range(n))
    buckets = max(max_points // 2, 1)
    size = n / buckets
    keep: list[int] = []
    for b in range(buckets):
        lo, hi = int(b * size), max(int((b + 1) * size), int(b * size) + 1)
        idx = range(lo, min(hi, n))
        keep.extend(sorted({min(idx, key=y.__getitem__), max(idx, key=y.__getitem__)}))
    return keep
