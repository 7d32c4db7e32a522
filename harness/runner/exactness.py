"""Techniques meant to be exact (checkpointing, accumulation, sharding, fused attention in fp32) are
checked against their baseline's losses; a drift past the declared tolerance is flagged in the result."""

from __future__ import annotations

from typing import Any

from harness import techniques as techreg
from harness.case import baseline_key

__all__ = ["baseline_key", "check"]  # baseline_key: harness.case's one definition, used by the runner


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
    return {
        "loss_max_rel_diff_vs_baseline": drift,
        "exact_rtol": rtol,
        "exactness": "ok" if drift <= rtol else "drift",
    }
