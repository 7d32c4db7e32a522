"""`harness fit`: per combination and budget, the largest batch (or seq) whose peak stays under it.

Each real probe is an isolated case through the existing runner (`run_case`): OOM, timeout and crash
come back as that probe's status, i.e. as "does not fit". With `estimate=True` probes are fake-tensor
estimates (harness/estimate) and one real probe at the answer checks it where the device exists.
Every probe and answer is one line of `<run>/fit.jsonl`, appended and flushed as it happens, so
`--resume RUN` re-asks nothing it already knows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.fit.budget import Budget
from harness.fit.search import largest_below, largest_fitting

if TYPE_CHECKING:
    from harness.case import CaseSpec

FIT_FILE = "fit.jsonl"
SEQ_AXIS_MAX = 2**20
# An unguarded first probe's process base (imports) before one was measured: only sizes the RSS guard.
DEFAULT_BASE_BYTES = 2**30


@dataclass
class FitOptions:
    axis: str
    maximum: int | None  # None: the axis default (axis_maximum)
    estimate: bool


def combination(case: CaseSpec) -> str:
    return f"{case.model_name}/{case.workload_name}/{case.techniques_name}"


def axis_maximum(case: CaseSpec, axis: str, requested: int | None) -> int:
    """The search's ceiling: the user's, or for seq_len the model's positions (a learned table cannot
    go past max_seq_len)."""
    if axis == "seq_len":
        model_max = case.model.get("max_seq_len") or SEQ_AXIS_MAX
        return min(requested or model_max, int(model_max))
    return requested or 4096


def axis_minimum(case: CaseSpec, axis: str) -> int:
    """The smallest value the case can take on the axis: a generate case's sequence holds its prompt
    (at least one token) and its new tokens; everything else starts at 1."""
    if axis != "seq_len" or case.workload_kind != "generate":
        return 1
    from harness.workloads.generate import GenerateConfig

    return GenerateConfig.model_validate(case.workload).new_tokens + 1


class FitLog:
    """fit.jsonl: every probe and answer, in order; read back on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[dict[str, Any]] = []
        if path.exists():
            for raw in path.read_text().splitlines():
                try:
                    self.lines.append(json.loads(raw))
                except json.JSONDecodeError:  # a torn last line from a kill: that probe re-runs
                    continue

    def append(self, record: dict[str, Any]) -> None:
        self.lines.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def probe(self, case_id: str, budget: str, method: str) -> dict[str, Any] | None:
        for r in self.lines:
            if r.get("record_kind") == "fit_probe" and (r["case_id"], r["budget"], r["method"]) == (
                case_id,
                budget,
                method,
            ):
                return r
        return None

    def estimate_at(self, case_id: str) -> dict[str, Any] | None:
        """An estimate of this probe case under any budget: the figure does not depend on the budget."""
        for r in self.lines:
            if r.get("record_kind") == "fit_probe" and r["method"] == "estimate" and r["case_id"] == case_id:
                return r
        return None

    def answer(self, combo: str, budget: str, axis: str) -> dict[str, Any] | None:
        for r in self.lines:
            if r.get("record_kind") == "fit_answer" and (r["combination"], r["budget"], r["axis"]) == (
                combo,
                budget,
                axis,
            ):
                return r
        return None


def probe_case(case: CaseSpec, axis: str, value: int, limit: int | None) -> CaseSpec:
    """The case at `value` on the axis, as a memory-only probe: no timing pass, no untimed extras."""
    return case.model_copy(
        update={
            axis: value,
            "timing_pass": False,
            "breakdown": False,
            "quality": False,
            "repeats": 1,
            "memory_limit_bytes": limit,
        }
    )


def peak_for(record: dict[str, Any], budget: Budget, device: str) -> tuple[int | None, str]:
    """The peak a budget holds, from a measured record: the device total on CUDA (NVML's process figure,
    else allocator reserved + the stated CUDA context), the process RSS for `host`, else on CPU the RSS
    above the post-import base."""
    if device == "cuda":
        from harness.estimate.gpu import CUDA_CONTEXT_BYTES

        if record.get("gpu_process_peak_bytes"):
            return int(record["gpu_process_peak_bytes"]), "gpu_process_peak_bytes"
        reserved = record.get("gpu_peak_reserved_bytes")
        total = reserved + CUDA_CONTEXT_BYTES if reserved is not None else None
        return total, "gpu_peak_reserved_bytes + cuda_context_bytes"
    if budget.kind == "host":
        return record.get("host_rss_peak_bytes"), "host_rss_peak_bytes"
    return record.get("host_rss_peak_above_base_bytes"), "host_rss_peak_above_base_bytes"


def estimated_peak(record: dict[str, Any], device: str) -> tuple[int | None, str]:
    est = record.get("estimated") or {}
    if device == "cuda":
        return est.get("gpu_device_total_bytes"), "estimated.gpu_device_total_bytes"
    return est.get("tensor_peak_bytes"), "estimated.tensor_peak_bytes"


MEMORY_FAILURES = ("oom", "timeout")


def judge(status: str, error: str | None, peak: int | None, budget: Budget) -> bool | None:
    if status in ("ok", "estimated"):
        return None if peak is None else peak <= budget.bytes
    if status in MEMORY_FAILURES:
        return False
    text = (error or "").lower()
    if status == "error" and ("out of memory" in text or ("memory" in text and "alloc" in text)):
        return False
    return None  # an error that is not about memory answers nothing


class Prober:
    """Runs (or estimates) probes for one fit run, logging each; a probe already in the log is reused."""

    def __init__(self, run_dir: Path, run_id: str, log: FitLog) -> None:
        self.run_dir, self.run_id, self.log = run_dir, run_id, log
        self.base_bytes: dict[str, int] = {}  # per combination: the post-import RSS a probe measured

    def real(self, case: CaseSpec, combo: str, axis: str, value: int, budget: Budget) -> dict[str, Any]:
        from harness.runner.case_runner import run_case
        from harness.runner.preflight import prepare_reference

        limit = self._limit(case, combo, budget)
        probe = probe_case(case, axis, value, limit)
        known = self.log.probe(probe.case_id, budget.name, "run")
        if known is not None:
            return known
        prepare_reference(probe)
        record = run_case(probe, self.run_dir, self.run_id, None)
        if record.get("host_rss_base_bytes"):
            self.base_bytes.setdefault(combo, int(record["host_rss_base_bytes"]))
        peak, peak_kind = peak_for(record, budget, case.device)
        fits = judge(record["status"], record.get("error"), peak, budget)
        return self._log(probe, combo, axis, value, budget, "run", record, fits, peak, peak_kind)

    def estimated(self, case: CaseSpec, combo: str, axis: str, value: int, budget: Budget) -> dict[str, Any]:
        from harness.estimate import estimate_case

        probe = probe_case(case, axis, value, None)
        known = self.log.probe(probe.case_id, budget.name, "estimate")
        if known is not None:
            return known
        earlier = self.log.estimate_at(probe.case_id)
        if earlier is not None:  # the same estimate judged against this budget: no second fake run
            record = {k: earlier[k] for k in ("status", "error", "tokens_per_s")}
            peak, peak_kind = earlier["peak_bytes"], earlier["peak_kind"]
        else:
            record = estimate_case(probe, self.run_id)
            peak, peak_kind = estimated_peak(record, case.device)
        fits = judge(record["status"], record.get("error"), peak, budget)
        return self._log(probe, combo, axis, value, budget, "estimate", record, fits, peak, peak_kind)

    def _limit(self, case: CaseSpec, combo: str, budget: Budget) -> int | None:
        """The runner's RSS guard for CPU probes: the budget itself for `host`, base + budget for a byte
        budget (so the guard ends a probe as soon as it is over); none on CUDA, where the device OOMs."""
        if case.device == "cuda" or budget.kind == "device":
            return None
        if budget.kind == "host":
            return budget.bytes
        return self.base_bytes.get(combo, DEFAULT_BASE_BYTES) + budget.bytes

    def _log(
        self,
        probe: CaseSpec,
        combo: str,
        axis: str,
        value: int,
        budget: Budget,
        method: str,
        record: dict[str, Any],
        fits: bool | None,
        peak: int | None,
        peak_kind: str,
    ) -> dict[str, Any]:
        line = {
            "record_kind": "fit_probe",
            "combination": combo,
            "case_id": probe.case_id,
            "budget": budget.name,
            "budget_bytes": budget.bytes,
            "budget_kind": budget.kind,
            "axis": axis,
            "value": value,
            "method": method,
            "status": record["status"],
            "error": record.get("error"),
            "fits": fits,
            "peak_bytes": peak,
            "peak_kind": peak_kind,
            "tokens_per_s": record.get("tokens_per_s"),
            "tokens_per_step": record.get("tokens_per_step"),
        }
        self.log.append(line)
        return line


def fit_one(
    case: CaseSpec, budget: Budget, opts: FitOptions, prober: Prober, cannot_probe: str | None
) -> dict[str, Any]:
    """The answer for one combination under one budget (logged with its probes)."""
    combo = combination(case)
    known = prober.log.answer(combo, budget.name, opts.axis)
    if known is not None:
        return known
    maximum = axis_maximum(case, opts.axis, opts.maximum or None)
    answer: dict[str, Any] = {
        "record_kind": "fit_answer",
        "combination": combo,
        "model_name": case.model_name,
        "workload_name": case.workload_name,
        "techniques_name": case.techniques_name,
        "device": case.device,
        "budget": budget.name,
        "budget_bytes": budget.bytes,
        "budget_kind": budget.kind,
        "axis": opts.axis,
        "axis_maximum": maximum,
        "method": "estimate" if opts.estimate else "run",
    }
    if cannot_probe and not opts.estimate:
        answer.update(largest=None, reason=cannot_probe)
        prober.log.append(answer)
        return answer
    ask: Callable[[CaseSpec, str, str, int, Budget], dict[str, Any]] = (
        prober.estimated if opts.estimate else prober.real
    )
    probes: dict[int, dict[str, Any]] = {}
    step = batch_step(case, opts.axis)
    if step > 1:
        answer["batch_step"] = step

    def probe(v: int) -> bool | None:  # v counts steps: a multi-rank batch is v per-rank samples x ranks
        probes[v] = ask(case, combo, opts.axis, v * step, budget)
        fits: bool | None = probes[v]["fits"]
        return fits

    lowest = axis_minimum(case, opts.axis)
    result = largest_fitting(probe, maximum // step, lowest)
    answer.update(
        # nothing answered at 1 is no answer, not "does not fit at 1"
        largest=None if result.undecided and result.largest == 0 else result.largest * step,
        first_failing=result.first_failing * step if result.first_failing else result.first_failing,
        at_axis_maximum=result.at_axis_max,
        probes=[v * step for v, _ in result.probed],
        reason=_reason(result, probes, step, lowest),
    )
    at = probes.get(result.largest, {})
    answer["tokens_per_s"] = at.get("tokens_per_s")
    if opts.estimate and result.largest > 0 and not cannot_probe:
        check = prober.real(case, combo, opts.axis, result.largest * step, budget)
        answer["verified_by_run"] = check["fits"]
        answer["tokens_per_s"] = check.get("tokens_per_s")
        if check["fits"] is False:  # the headline must not say it fits: find the real answer below
            answer.update(_corrected(case, combo, opts.axis, budget, prober, result.largest, step, lowest))
    prober.log.append(answer)
    return answer


def _corrected(
    case: CaseSpec,
    combo: str,
    axis: str,
    budget: Budget,
    prober: Prober,
    estimated: int,
    step: int,
    lowest: int,
) -> dict[str, Any]:
    """The estimate said `estimated` fits and a real run said no: real probes below it give the answer
    (the estimate's stays as largest_estimated)."""
    runs: dict[int, dict[str, Any]] = {}

    def probe(v: int) -> bool | None:
        runs[v] = prober.real(case, combo, axis, v * step, budget)
        fits: bool | None = runs[v]["fits"]
        return fits

    below = largest_below(probe, estimated, lowest)
    return {
        "largest_estimated": estimated * step,
        "largest": None if below.undecided and below.largest == 0 else below.largest * step,
        "first_failing": below.first_failing * step if below.first_failing else below.first_failing,
        "at_axis_maximum": False,
        "corrected_by_runs": [v * step for v, _ in below.probed],
        "tokens_per_s": runs.get(below.largest, {}).get("tokens_per_s"),
        "reason": _reason(below, runs, step, lowest) if below.largest == 0 or below.undecided else None,
    }


def batch_step(case: CaseSpec, axis: str) -> int:
    """The batch axis of a ZeRO/FSDP case moves in whole per-rank batches (each of its ranks takes an
    equal share, so a batch of 1 cannot run on 2 ranks); every other axis moves by 1."""
    if axis != "batch_size" or not case.techniques:  # ranks come from techniques only
        return 1
    from harness.runner.ranks import ranks_needed

    return max(1, ranks_needed(case))


def _reason(result: Any, probes: dict[int, dict[str, Any]], step: int = 1, lowest: int = 1) -> str | None:
    if result.undecided:
        v, _ = result.probed[-1]
        why = f"{probes[v]['status']}: {probes[v].get('error')}"
        return why if v == lowest else f"probe at {v * step} could not answer: {why}"
    if result.largest == 0:
        p = probes.get(lowest, {})
        over = f"peak {p.get('peak_bytes')} > {p.get('budget_bytes')}"
        return f"does not fit at {lowest * step} ({p.get('status')}, {over})"
    return None
