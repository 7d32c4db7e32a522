"""A case against its baseline: what differs besides the technique, and the paired quality difference.

Like with like: a case's ratios to its baseline (memory, time) mean "what the technique does" only when
nothing else differs. A multi-rank case (ZeRO-1, FSDP2) splits the same global batch over its ranks, so
each rank does 1/N of the baseline's per-process work: the record lists every such difference
(`baseline_differences`) and says the ratios are not the technique's (`baseline_ratios_comparable`).

Quality: the case's and the baseline's held-out losses are paired batch by batch (the same held-out
batches: same seed, same shape), so the difference `quality_delta_nats` is mean(case - baseline) with a
bootstrap confidence interval over batches. When the interval contains 0 the change is not measurable
with these batches (`quality_change` = "no measurable change"), and the number must not be ranked by.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
NO_CHANGE = "no measurable change"


def bootstrap_mean_interval(
    values: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean of `values` (resampled with
    replacement, `resamples` times, from a fixed seed so the same values give the same interval)."""
    if not values:
        raise ValueError("no values to bootstrap")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean  # one batch: no spread to resample; callers treat it as unmeasurable
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[round((1 - tail) * (resamples - 1))]
    return mean, low, high


def classify(low: float, high: float, n: int) -> str:
    """`no measurable change` when the interval holds 0 (or one batch gives no interval), else the
    direction: `higher` or `lower` than the baseline."""
    if n < 2 or low <= 0.0 <= high:
        return NO_CHANGE
    return "higher" if low > 0 else "lower"


def paired_difference(case: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """`quality_delta_nats`: mean over batches of (case - baseline) held-out loss, its bootstrap
    interval, and `quality_change`: the label to show (`no measurable change` inside the interval)."""
    if len(case) != len(base) or not case:
        return {"quality_delta_unavailable_reason": f"{len(case)} case vs {len(base)} baseline batches"}
    diffs = [a - b for a, b in zip(case, base, strict=True)]
    if not all(math.isfinite(d) for d in diffs):  # a diverged model (loss NaN/inf): no difference to state
        side = "the case's" if not all(math.isfinite(a) for a in case) else "the baseline's"
        return {"quality_delta_unavailable_reason": f"{side} held-out loss is not finite (diverged)"}
    mean, low, high = bootstrap_mean_interval(diffs)
    return {
        "quality_delta_nats": mean,
        "quality_delta_ci_low_nats": low,
        "quality_delta_ci_high_nats": high,
        "quality_ci_level_fraction": CONFIDENCE,
        "quality_change": classify(low, high, len(diffs)),
    }


def quality_vs_baseline(record: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Held-out loss of the case minus its baseline case's, paired over the same held-out batches.
    Inference cases already carry it (against the fp32 reference model, in the case process)."""
    if not record.get("techniques") or "quality_delta_nats" in record:
        return {}
    if not baseline or baseline.get("status") != "ok":
        return {}
    ours, theirs = record.get("heldout_loss_per_batch_nats"), baseline.get("heldout_loss_per_batch_nats")
    if not ours or not theirs:
        return {}
    if record.get("heldout_draw") != baseline.get("heldout_draw"):
        return {"quality_delta_unavailable_reason": "the baseline was scored on other held-out batches"}
    return paired_difference(ours, theirs)


def baseline_differences(record: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """What differs from the baseline besides the technique, and whether ratios to it are the
    technique's: same global batch AND same per-rank work (one process each)."""
    if not baseline or record.get("techniques") == []:
        return {}
    ranks, base_ranks = int(record.get("world_size") or 1), int(baseline.get("world_size") or 1)
    diffs: list[str] = []
    if ranks != base_ranks:
        diffs.append(f"ranks: {ranks} vs baseline {base_ranks}")
    batch, base_batch = record.get("batch_size"), baseline.get("batch_size")
    if batch != base_batch:
        diffs.append(f"global batch: {batch} vs baseline {base_batch}")
    if isinstance(batch, int) and isinstance(base_batch, int):
        per_rank, base_per_rank = batch // ranks, base_batch // base_ranks
        if per_rank != base_per_rank:
            diffs.append(f"per-rank batch: {per_rank} vs baseline {base_per_rank}")
    if record.get("host_memory_scope") != baseline.get("host_memory_scope"):
        diffs.append(
            f"host memory scope: {record.get('host_memory_scope') or 'case process'} vs baseline "
            f"{baseline.get('host_memory_scope') or 'case process'}"
        )
    out: dict[str, Any] = {"baseline_differences": diffs, "baseline_ratios_comparable": not diffs}
    if diffs:
        reason = "differs from its baseline in more than the technique: " + "; ".join(diffs)
        out["baseline_ratio_null_reason"] = reason
    return out
