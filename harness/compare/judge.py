"""Match cases of a baseline and a current snapshot and judge every metric by its own policy.

Statuses, and how they set the exit code (precedence: 1 over 3 over 0; usage errors exit 2 before any
judging). The gate fails closed: what it cannot see or cannot read never passes.
- regressed, failed (a current case oom/timeout/error, or unsupported where the baseline ran; a NaN or
  infinite figure in the current run) -> 1
- insufficient data (too few samples; a metric the baseline had is missing now; a NaN or infinite
  baseline figure; a baseline case missing from the current run; a case definition that changed; lines of
  either side that could not be read; a run of another suite; nothing compared at all), and not
  comparable because the environment changed (memory and time; quality too when the CPU's instruction
  set differs) -> 3
- improved, unchanged, new -> 0: shown, to be accepted by refreshing the baseline.
A metric whose policy has `gate: false` is shown but never sets the exit code.
See docs/gate.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.compare import stats
from harness.compare.policy import MemoryPolicy, QualityPolicy, TimePolicy
from harness.compare.snapshot import CaseMetrics, Metric, Snapshot
from harness.errors import EXIT_FAILED, EXIT_INSUFFICIENT, EXIT_OK

REGRESSED, IMPROVED, UNCHANGED = stats.REGRESSED, stats.IMPROVED, stats.UNCHANGED
NEW, MISSING, NOT_COMPARABLE = "new", "missing", "not comparable"
FAILED, INSUFFICIENT = "failed", "insufficient data"
# The verdicts of a figure that was compared.
JUDGED = (REGRESSED, FAILED, IMPROVED, UNCHANGED)
STATUSES = (REGRESSED, FAILED, INSUFFICIENT, NOT_COMPARABLE, NEW, MISSING, IMPROVED, UNCHANGED)

# Environment fields that change what memory and time measure; the rest are shown only.
GATING_ENV = ("torch", "torch_build", "python", "cpu_model", "cpu_isa", "gpu_name", "gpu_driver")
# A different instruction set changes the kernels torch picks, hence the rounding of every loss (0.2 % between
# an AVX2 and a bf16-capable CPU sold under one model name): quality is blocked by these too.
QUALITY_ENV = ("cpu_isa",)
SHOWN_ENV = (*GATING_ENV, "cpu_microarch", "harness", "cpu_count", "host")
ERROR_STATUSES = ("oom", "timeout", "error")

Policy = MemoryPolicy | TimePolicy | QualityPolicy
PolicyFor = Callable[[str | None], Mapping[str, Policy]]


@dataclass(frozen=True)
class Verdict:
    case_name: str
    case_id: str
    metric: str  # a metric name, or "status" / "definition" for case-level verdicts
    status: str
    kind: str = "case"
    gated: bool = True
    baseline: Metric = None
    current: Metric = None
    change: float | None = None  # relative change (cur / base - 1) where it means something
    detail: str = ""

    @property
    def fails(self) -> bool:
        return self.gated and self.status in (REGRESSED, FAILED)

    @property
    def undecided(self) -> bool:
        return self.gated and self.status in (INSUFFICIENT, NOT_COMPARABLE, MISSING)


@dataclass(frozen=True)
class Comparison:
    baseline: Snapshot
    current: Snapshot
    verdicts: list[Verdict]
    env_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    allow_env_change: bool = False

    @property
    def exit_code(self) -> int:
        if any(v.fails for v in self.verdicts):
            return EXIT_FAILED
        if any(v.undecided for v in self.verdicts):
            return EXIT_INSUFFICIENT
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        """Gated verdicts by status: what decides the exit code (ungated rows are shown, not counted)."""
        gated = [v for v in self.verdicts if v.gated]
        return {s: n for s in STATUSES if (n := sum(v.status == s for v in gated))}

    @property
    def ungated_count(self) -> int:
        return sum(not v.gated for v in self.verdicts)


def env_diff(base: Mapping[str, Any], cur: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Shown environment fields that differ; a field absent on either side is not a difference."""
    return {
        k: (base.get(k), cur.get(k))
        for k in SHOWN_ENV
        if None not in (base.get(k), cur.get(k)) and base.get(k) != cur.get(k)
    }


def _relative(base: float, cur: float) -> float | None:
    return cur / base - 1.0 if base else None


def judge_metric(
    name: str, policy: Policy, base: Metric, cur: Metric, env_block: str
) -> tuple[str, float | None, str]:
    """(status, relative change, detail) of one metric of one case."""
    if base is None:
        return NEW, None, "no baseline value"
    if cur is None:
        return INSUFFICIENT, None, "not measured in the current run"
    if not _finite(cur):
        return FAILED, None, f"{name}: the current run measured {_show(cur)}, not a finite number"
    if not _finite(base):
        return INSUFFICIENT, None, f"{name}: the baseline holds {_show(base)}, not a finite number"
    if env_block and policy.kind in ("memory", "time", "quality"):
        change = _relative(base, cur) if not isinstance(base, list) and not isinstance(cur, list) else None
        return (
            NOT_COMPARABLE,
            change,
            f"environment changed ({env_block}); pass --allow-env-change to judge anyway",
        )
    if isinstance(policy, TimePolicy):
        return _judge_time(policy, base, cur)
    if isinstance(base, list) or isinstance(cur, list):
        return INSUFFICIENT, None, f"{name}: expected one number per side"
    if isinstance(policy, MemoryPolicy):
        tol = stats.tolerance(base, policy.abs_bytes, policy.rel)
        return stats.judge_delta(base, cur, tol), _relative(base, cur), f"tolerance {tol / 2**20:.2f} MiB"
    tol = stats.tolerance(base, policy.abs_tol, policy.rel)
    return stats.judge_delta(base, cur, tol), _relative(base, cur), f"tolerance {tol:.3g}"


def _finite(value: Metric) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _show(value: Metric) -> str:
    values = value if isinstance(value, list) else [value]
    bad = [v for v in values if not (isinstance(v, (int, float)) and math.isfinite(v))]
    return repr(bad[0]) if len(values) == 1 else f"{len(bad)} of {len(values)} samples {bad[0]!r}"


def _judge_time(policy: TimePolicy, base: Metric, cur: Metric) -> tuple[str, float | None, str]:
    b = base if isinstance(base, list) else [] if base is None else [base]
    c = cur if isinstance(cur, list) else [] if cur is None else [cur]
    if min(len(b), len(c)) < policy.min_samples:
        return INSUFFICIENT, None, f"{len(b)} vs {len(c)} samples; {policy.min_samples} per side needed"
    iv = stats.median_ratio_interval(
        b, c, confidence=policy.confidence, resamples=policy.resamples, seed=policy.seed
    )
    ci = f"{policy.confidence:.0%} CI [{iv.low:.3f}, {iv.high:.3f}]"
    detail = f"median ratio {iv.ratio:.3f}, {ci}, threshold {policy.threshold:.0%}"
    return stats.judge_ratio(iv, policy.threshold), iv.ratio - 1.0, detail


def _case_status(base: CaseMetrics, cur: CaseMetrics) -> Verdict | None:
    """A verdict for the case as a whole when either side did not run OK; None when both did."""
    if cur.status == "ok" and base.status == "ok":
        return None
    if cur.status in ERROR_STATUSES:  # a crash is never "unchanged": the gate cannot see that case's figures
        was = "still " if cur.status == base.status else f"{base.status} -> "
        status, detail = FAILED, f"{was}{cur.status}: {cur.error or ''}"
    elif cur.status == base.status:
        status, detail = UNCHANGED, f"still {cur.status}: {cur.error or ''}"
    elif base.status == "ok":
        status, detail = FAILED, f"{base.status} -> {cur.status}: {cur.error or ''}"
    else:
        status, detail = NEW, f"{base.status} -> {cur.status}: nothing to compare against"
    return Verdict(cur.case_name, cur.case_id, "status", status, detail=detail)


def _metric_verdicts(
    base: CaseMetrics, cur: CaseMetrics, policies: Mapping[str, Policy], blocks: Mapping[str, str]
) -> list[Verdict]:
    out = []
    for name, policy in policies.items():
        b, c = base.metrics.get(name), cur.metrics.get(name)
        if b is None and c is None:
            continue  # not measured here at all (GPU figures on a CPU run)
        status, change, detail = judge_metric(name, policy, b, c, blocks.get(policy.kind, ""))
        sources = (base.timing_source, cur.timing_source)
        if policy.kind == "time" and None not in sources and sources[0] != sources[1]:
            status, change = NOT_COMPARABLE, None
            detail = f"steps timed in different passes ({sources[0]} vs {sources[1]})"
        machines = (base.hardware, cur.hardware)
        if policy.kind == "time" and None not in machines and machines[0] != machines[1]:
            status, change = NOT_COMPARABLE, None
            detail = f"steps timed on different hardware ({machines[0]} vs {machines[1]})"
        if policy.kind == "memory" and name.startswith("host"):
            status, detail = _memory_disturbance(status, detail, base, cur)
        out.append(
            Verdict(cur.case_name, cur.case_id, name, status, policy.kind, policy.gate, b, c, change, detail)
        )
    return out


def _memory_disturbance(status: str, detail: str, base: CaseMetrics, cur: CaseMetrics) -> tuple[str, str]:
    """A host figure measured while the kernel reclaimed the case's pages reads low: on the current side
    it cannot vouch for "unchanged" or "improved" (a regression it still shows is real); on the baseline
    side a regression may be the baseline's low reading, which the detail says."""
    if cur.host_memory_disturbed and status in (UNCHANGED, IMPROVED):
        return INSUFFICIENT, f"current run disturbed: {cur.host_memory_disturbed}"
    if base.host_memory_disturbed and status == REGRESSED:
        return status, f"{detail}; the baseline's figure was disturbed ({base.host_memory_disturbed})"
    return status, detail


def _unmatched(case: CaseMetrics, other_by_name: Mapping[str, CaseMetrics], side: str) -> Verdict:
    twin = other_by_name.get(case.case_name)
    if twin is not None:
        ids = (twin.case_id, case.case_id) if side == "current" else (case.case_id, twin.case_id)
        return Verdict(
            case.case_name,
            case.case_id,
            "definition",
            NOT_COMPARABLE,
            detail=f"case definition changed: id {ids[0]} -> {ids[1]}",
        )
    if side == "current" and case.status in ERROR_STATUSES:
        return Verdict(
            case.case_name,
            case.case_id,
            "status",
            FAILED,
            detail=f"new case {case.status}: {case.error or ''}",
        )
    if side == "current":
        return Verdict(case.case_name, case.case_id, "status", NEW)
    return Verdict(
        case.case_name,
        case.case_id,
        "status",
        MISSING,
        detail="in the baseline, not in the current run (the run stopped early, or the suite changed: "
        "refresh the baseline)",
    )


def compare(
    base: Snapshot, cur: Snapshot, policy_for: PolicyFor, *, allow_env_change: bool = False
) -> Comparison:
    """Every case of both sides gets at least one verdict; matched OK cases one per measured metric;
    whatever makes the comparison as a whole untrustworthy gets a run-level verdict."""
    diff = env_diff(base.env, cur.env)
    blocks = {} if allow_env_change else env_blocks(diff)
    base_ids, cur_ids = base.by_id(), cur.by_id()
    verdicts: list[Verdict] = _run_verdicts(base, cur)
    for case in cur.cases:
        if case.case_id not in base_ids:
            verdicts.append(_unmatched(case, base.by_name(), "current"))
            continue
        old = base_ids[case.case_id]
        status = _case_status(old, case)
        verdicts += [status] if status else _metric_verdicts(old, case, policy_for(case.suite), blocks)
    cur_names = cur.by_name()
    verdicts += [
        _unmatched(c, cur_names, "baseline")
        for c in base.cases
        if c.case_id not in cur_ids and c.case_name not in cur_names
    ]
    if not verdicts:
        verdicts.append(_run_verdict("nothing to compare: neither side holds a case"))
    elif not any(v.gated and v.status in JUDGED and v.kind != "case" for v in verdicts):
        # No figure compared (an empty baseline, or one without figures, makes every one "new"; a case
        # still unsupported on both sides has none): nothing was judged, so nothing passed.
        verdicts.append(
            _run_verdict("nothing was judged: no case of the current run has a gated figure in the baseline")
        )
    return Comparison(base, cur, verdicts, diff, allow_env_change)


def env_blocks(diff: Mapping[str, tuple[Any, Any]]) -> dict[str, str]:
    """Per metric kind, why its figures are not comparable across these environments ('' when they are)."""

    def why(fields: tuple[str, ...]) -> str:
        return "; ".join(f"{k} {b} -> {c}" for k, (b, c) in diff.items() if k in fields)

    return {"memory": why(GATING_ENV), "time": why(GATING_ENV), "quality": why(QUALITY_ENV)}


def _run_verdict(detail: str) -> Verdict:
    return Verdict("(run)", "", "input", INSUFFICIENT, detail=detail)


def _run_verdicts(base: Snapshot, cur: Snapshot) -> list[Verdict]:
    """Unreadable input and a run of another suite: the gate cannot vouch for what it did not read."""
    out = [_run_verdict(f"unreadable: {p}") for p in (*base.problems, *cur.problems)]
    base_suites = {c.suite for c in base.cases if c.suite}
    cur_suites = {c.suite for c in cur.cases if c.suite}
    if base_suites and cur_suites and not base_suites & cur_suites:
        out.append(
            _run_verdict(
                f"the current run is of suite {', '.join(sorted(cur_suites))}, the baseline of "
                f"{', '.join(sorted(base_suites))}: not the same suite"
            )
        )
    return out
