"""The memory-model rules the bottleneck adapters share (pure: no torch, unlike _adapters.py)."""

from __future__ import annotations

from harness.analysis.shape import Shape


def bottleneck_shapes(d: int, r: int) -> list[tuple[int, ...]]:
    """One d -> r -> d adapter's tensors: down weight and bias, up weight and bias."""
    return [(r, d), (r,), (d, r), (d,)]


def bottleneck_saved_bytes(shape: Shape, r: int) -> int:
    """What one adapter keeps for backward: its input (the sublayer's output, for the down projection's
    weight gradient), GELU's input and output (b, s, r) each."""
    return shape.compute_bytes * shape.batch * shape.seq * (shape.cfg.d_model + 2 * r)
