"""Techniques meant to be exact (checkpointing, accumulation, sharding, fused attention in fp32) are
checked against their baseline's losses; a drift past the declared tolerance is flagged in the result.
So is a tensor peak above the baseline's beyond noise: a technique that keeps the math and is listed to
save memory cannot cost memory unless the measurement (or the technique) is wrong."""

from __future__ import annotations

from typing import Any

from harness import techniques as techreg
from harness.case import baseline_key

__all__ = ["baseline_key", "check"]  # baseline_key: harness.case's one definition, used by the runner

# Noise of the tensor peak: the CI gate's default tolerance (results/baselines/policy.yaml); the figure is
# byte-identical run to run, so anything above this is a real difference.
PEAK_NOISE_BYTES = 1 << 20
PEAK_NOISE_FRACTION = 0.005


def check(record: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """`exactness` (ok / drift), the largest relative loss difference and the tolerance, for a case whose
    techniques all declare themselves exact; {} otherwise or when there is nothing to compare."""
    names = record.get("techniques") or []
    if not names or record.get("status") != "ok" or not baseline or baseline.get("status") != "ok":
        return {}
    classes = [techreg.get(n) for n in names]
    if not all(c.exact for c in classes):
        return {}
    rtol = max(c.exact_rtol for c in classes)
    ours, theirs = record.get("loss") or [], baseline.get("loss") or []
    if not ours or len(ours) != len(theirs):
        return {}
    drift = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, theirs, strict=True))
    out: dict[str, Any] = {
        "loss_max_rel_diff_vs_baseline": drift,
        "exact_rtol": rtol,
        "exactness": "ok" if drift <= rtol else "drift",
    }
    if flag := negative_saving(record, baseline):
        out["negative_saving_flag"] = flag
    return out


def tensor_peak(record: dict[str, Any]) -> int | None:
    breakdown = record.get("breakdown") or {}
    peak = breakdown.get("tensor_peak_bytes") if isinstance(breakdown, dict) else None
    return int(peak) if isinstance(peak, (int, float)) else None


def negative_saving(record: dict[str, Any], baseline: dict[str, Any]) -> str | None:
    """Why an exact case's tensor peak above its baseline's cannot be right, or None when it is not above
    beyond noise (or either peak is missing: host RSS is too noisy to judge this by)."""
    ours, theirs = tensor_peak(record), tensor_peak(baseline)
    if ours is None or theirs is None:
        return None
    excess = ours - theirs
    if excess <= max(PEAK_NOISE_BYTES, PEAK_NOISE_FRACTION * theirs):
        return None
    return (
        f"tensor peak {ours} bytes is {excess} bytes above the baseline's {theirs} (beyond noise: "
        f"max({PEAK_NOISE_BYTES} bytes, {PEAK_NOISE_FRACTION:.1%})) for techniques that keep the math: "
        "a negative saving; check the measurement and the technique's wrapping"
    )
