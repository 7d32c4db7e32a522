"""One case, end to end: a memory pass, then timing passes, merged into one result record."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.runner import hostload
from harness.runner.parent import PEAK_PHASES, PassResult, run_pass
from harness.runner.procmem import HAVE_PROC
from harness.runner.profile import profile_case
from harness.runner.sampler import Nvml, achieved_interval
from harness.runner.timeline import write_timeline

RECORD_VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def labels(case: CaseSpec, run_id: str) -> dict[str, Any]:
    return {
        "record_version": RECORD_VERSION,
        "run_id": run_id,
        "case_id": case.case_id,
        "case_name": case.name,
        "suite": case.suite,
        "model_name": case.model_name,
        "workload_name": case.workload_name,
        "workload_kind": case.workload_kind,
        "techniques_name": case.techniques_name,
        "techniques": [t.name for t in case.techniques],
        "batch_size": case.batch_size,
        "seq_len": case.seq_len,
        "device": case.device,
        "dtype": case.dtype,
        "spec": case.model_dump(mode="json"),
    }


def unsupported_record(case: CaseSpec, run_id: str, reason: str) -> dict[str, Any]:
    t = now_iso()
    return {**labels(case, run_id), "status": "unsupported", "error": reason, "started_at": t, "ended_at": t}


def error_record(case: CaseSpec, run_id: str, cause: str) -> dict[str, Any]:
    """A case that failed before (or around) its process: the cause, no figures."""
    t = now_iso()
    return {**labels(case, run_id), "status": "error", "error": cause, "started_at": t, "ended_at": t}


@dataclass
class CaseRun:
    """One case between its passes: the suite runner interleaves the passes of a group's cases."""

    case: CaseSpec
    case_dir: Path
    started: str
    t0: float
    mem: PassResult
    timing: list[PassResult] = field(default_factory=list)
    timing_load: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wants_timing(self) -> bool:
        ok = self.mem.status == "ok" and all(p.status == "ok" for p in self.timing)
        return ok and self.case.timing_pass and len(self.timing) < self.case.repeats


def memory_pass(case: CaseSpec, run_dir: Path, nvml: Nvml | None) -> CaseRun:
    started, t0 = now_iso(), time.monotonic()
    case_dir = run_dir / "cases" / case.case_id
    mem = run_pass(case, case_dir, True, nvml, time.monotonic() + case.timeout_s)
    return CaseRun(case, case_dir, started, t0, mem)


def timing_pass(cr: CaseRun, nvml: Nvml | None) -> None:
    """One more timing pass, bracketed by the machine's load figures; the first also runs the extras."""
    extra = {"HARNESS_EXTRAS": "1" if not cr.timing else "0"}
    before = hostload.snapshot()
    cr.timing.append(run_pass(cr.case, cr.case_dir, False, nvml, time.monotonic() + cr.case.timeout_s, extra))
    cr.timing_load.append(hostload.between(before, hostload.snapshot()))


def finish_case(
    cr: CaseRun, run_dir: Path, run_id: str, nvml: Nvml | None, profile: str | None = None
) -> dict[str, Any]:
    case, mem, timing, t_finish = cr.case, cr.mem, cr.timing, time.monotonic()
    record = {**labels(case, run_id), "started_at": cr.started}
    record.update(_status_fields(case, mem, timing))
    record.update(_memory_fields(mem, nvml))
    record.update(process_start=mem.process_start, process_start_reason=mem.process_start_reason)
    record.update(_child_fields(_figures_source(mem, timing)))
    for key in ("memory_pass_warmup_step_count", "memory_pass_measured_step_count"):
        if key in mem.child:
            record[key] = mem.child[key]
    record.update(serving_memory_fields(record))
    if mem.child.get("ranks"):
        record.update(_rank_memory_fields(record))
    record.update(_load_fields(cr.timing_load))
    record.update(_time_fields(case, mem, timing, record.get("timing_cpu_pressure_some_fraction_max")))
    record.update(_timed_child_figures(timing))
    if record.get("step_time_s_median"):
        record.update(_compute_fields(case, record["step_time_s_median"]))
    record["timeline_file"] = write_timeline(cr.case_dir / "timeline.json", mem, run_dir)
    if profile and record["status"] == "ok":  # its own process, after the measured ones: no distortion
        extra = profile_case(case, cr.case_dir, run_dir, nvml, profile)
        extra["artifacts"] = {**record.get("artifacts", {}), **extra.get("artifacts", {})}
        record.update(extra)
    record["ended_at"] = now_iso()
    # The case's own time: its passes and this; not the group's other passes interleaved with them.
    own = mem.wall_time_s + sum(p.wall_time_s for p in timing) + time.monotonic() - t_finish
    record["wall_time_s"] = round(own, 3)
    return record


def run_case(
    case: CaseSpec, run_dir: Path, run_id: str, nvml: Nvml | None, profile: str | None = None
) -> dict[str, Any]:
    """A case's passes one after the other (the suite runner interleaves a group's instead)."""
    cr = memory_pass(case, run_dir, nvml)
    while cr.wants_timing:
        timing_pass(cr, nvml)
    return finish_case(cr, run_dir, run_id, nvml, profile)


def _figures_source(mem: PassResult, timing: list[PassResult]) -> dict[str, Any]:
    """The first timing pass ran every measured step and the extras (the memory pass stops once its
    peak repeats), so losses and figures come from it; a multi-rank case's figures are its ranks' own
    memory, which only the memory pass measures."""
    if timing and timing[0].status == "ok" and not mem.child.get("ranks"):
        return timing[0].child
    return mem.child


def _load_fields(loads: list[dict[str, Any]]) -> dict[str, Any]:
    if not loads:
        return {}

    def worst(key: str) -> float | None:
        vals = [x[key] for x in loads if x.get(key) is not None]
        return max(vals) if vals else None

    return {
        "timing_load": loads,
        "timing_loadavg_1m_max": worst("loadavg_1m_end"),
        "timing_cpu_pressure_some_fraction_max": worst("cpu_pressure_some_fraction"),
        "timing_cpu_steal_fraction_max": worst("cpu_steal_fraction"),
    }


def _status_fields(case: CaseSpec, mem: PassResult, timing: list[PassResult]) -> dict[str, Any]:
    failed = next((p for p in [mem, *timing] if p.status != "ok"), None)
    if failed is None:
        return {"status": "ok", "error": None}
    error = failed.error
    if failed.status == "timeout":
        error = f"exceeded timeout_s {case.timeout_s:g} (the process group was killed)"
    which = "memory pass" if failed is mem else "timing pass"
    out: dict[str, Any] = {"status": failed.status, "error": f"{which}: {error}"}
    out.update(exit_code=failed.exit_code, stderr_tail=failed.stderr_tail)
    if "oom_requested_bytes" in failed.child:
        out["oom_requested_bytes"] = failed.child["oom_requested_bytes"]
    if "traceback_tail" in failed.child:
        out["traceback_tail"] = failed.child["traceback_tail"]
    return out


# A fall of the case's file-backed RSS above this is memory pressure from other work, not noise: quiet
# runs show 0 (at most 10 KiB), and it equals the gate's absolute memory tolerance (compare/policy.py).
DISTURBED_FILE_RSS_DROP_BYTES = 1 << 20


def file_reclaim_fields(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the kernel took file-backed pages (library code, mapped files) from the case while it ran.

    Under memory pressure the kernel drops such pages from a process without it freeing anything: RSS
    falls, so a peak above base reads low (measured: 2-4 MiB low on a bitsandbytes case whose library
    pages were faulted in after the base, with a page-cache reader beside it in a 1.4 GiB cgroup)."""
    drops = {n: phases[n].get("host_file_rss_drop_bytes") for n in PEAK_PHASES if n in phases}
    known = {n: d for n, d in drops.items() if d is not None}
    if not known:
        return {
            "host_file_rss_drop_bytes": None,
            "host_memory_disturbed": None,
            "host_memory_disturbed_reason": None,
        }
    phase, drop = max(known.items(), key=lambda kv: kv[1])
    disturbed = drop > DISTURBED_FILE_RSS_DROP_BYTES
    why = (
        f"the kernel reclaimed {drop / 2**20:.1f} MiB of the case's file-backed pages in {phase} (memory "
        "pressure from other work): host figures above base may read low by up to that; rerun on a "
        "quieter machine"
    )
    return {
        "host_file_rss_drop_bytes": drop,
        "host_memory_disturbed": disturbed,
        "host_memory_disturbed_reason": why if disturbed else None,
    }


def _memory_fields(mem: PassResult, nvml: Nvml | None) -> dict[str, Any]:
    phases = {p.name: p.to_dict() for p in mem.phases}
    build = phases.get("build", {})
    base = build.get("host_rss_start_bytes")
    peaks = [
        phases[n]["host_rss_peak_bytes"] for n in PEAK_PHASES if phases.get(n, {}).get("host_rss_peak_bytes")
    ]
    sampled = [
        phases[n]["host_rss_sampled_peak_bytes"]
        for n in PEAK_PHASES
        if phases.get(n, {}).get("host_rss_sampled_peak_bytes")
    ]
    peak = max(peaks) if peaks else None
    out: dict[str, Any] = {
        "phases": phases,
        "host_rss_base_bytes": base,
        "host_rss_peak_bytes": peak,
        "host_rss_peak_above_base_bytes": peak - base if peak is not None and base is not None else None,
        "host_rss_sampled_peak_bytes": max(sampled) if sampled else None,
        "host_peak_method": "vmhwm" if HAVE_PROC else "sampled",
        # A pass that did not end ok was killed or crashed: the kernel unmapping its pages as it exits is
        # no pressure from outside, and its figures are no measurement to doubt.
        **file_reclaim_fields(phases if mem.status == "ok" else {}),
    }
    out.update(_gpu_fields(phases, mem, nvml))
    out.update(achieved_interval(mem.samples, mem.sample_interval_s))
    return out


def _phase_above_base(record: dict[str, Any], phase: str, key: str) -> int | None:
    ph = record.get("phases", {}).get(phase, {})
    base = record.get("host_rss_base_bytes")
    if key.startswith("host"):
        peak = ph.get("host_rss_peak_bytes")
        return peak - base if peak is not None and base is not None else None
    value = ph.get(key)
    return int(value) if value is not None else None


def serving_memory_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Build-phase cost and, for a session that serves its model (`serving` from the case process:
    infer, generate), the serving figures; those become the headline.

    A deployment loads the compressed model once and then serves it: what it sees is the steady state of
    the measured phase. The build phase is where a technique's input (fp32 weights) and output (the
    quantized or sparse copy) coexist by construction: the cost to *produce* the model, kept beside it
    as host_build_peak_above_base_bytes, never hidden in the headline. A multi-rank case keeps its
    per-rank figures (runner/ranks.py)."""
    if record.get("ranks"):
        return {}
    out: dict[str, Any] = {
        "host_build_peak_above_base_bytes": _phase_above_base(record, "build", "host"),
        "gpu_build_peak_allocated_bytes": _phase_above_base(record, "build", "gpu_peak_allocated_bytes"),
    }
    if not record.get("serving"):
        out["memory_headline_scope"] = "build, warm-up and measured phases (peak over all)"
        return out
    serving = _phase_above_base(record, "measured", "host")
    gpu_serving = _phase_above_base(record, "measured", "gpu_peak_allocated_bytes")
    out.update(
        host_serving_rss_above_base_bytes=serving,
        gpu_serving_peak_allocated_bytes=gpu_serving,
        # The all-phase peak stays readable; the headline names what a deployment would see.
        host_all_phases_peak_above_base_bytes=record.get("host_rss_peak_above_base_bytes"),
        memory_headline_scope="measured phase: serving steady state (build phase: *_build_*)",
    )
    if serving is not None:
        out["host_rss_peak_above_base_bytes"] = serving
    if gpu_serving is not None:
        out["gpu_peak_allocated_bytes"] = gpu_serving
    return out


def _gpu_fields(phases: dict[str, Any], mem: PassResult, nvml: Nvml | None) -> dict[str, Any]:
    def peak(key: str) -> int | None:
        vals = [phases[n][key] for n in ("warmup", "measured") if phases.get(n, {}).get(key) is not None]
        return max(vals) if vals else None

    out: dict[str, Any] = {
        "gpu_peak_allocated_bytes": peak("gpu_peak_allocated_bytes"),
        "gpu_peak_reserved_bytes": peak("gpu_peak_reserved_bytes"),
        "gpu_process_peak_bytes": mem.gpu_process_peak_bytes,
        "gpu_device_peak_bytes": mem.gpu_device_peak_bytes,
    }
    reasons = []
    if out["gpu_peak_allocated_bytes"] is None:
        reasons.append("torch allocator figures: the case does not run on CUDA")
    if nvml is None or not nvml.available:
        reasons.append(f"NVML: {nvml.reason if nvml else 'not initialised'}")
    out["gpu_unavailable_reason"] = "; ".join(reasons) or None
    return out


def _rank_memory_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A multi-rank case trains in its ranks (each measured itself, see runner/ranks.py): the case's memory
    is the largest rank's; the case process's own figures (the launcher) are kept as launcher_*."""
    keys = ("host_rss_base_bytes", "host_rss_peak_bytes", "host_rss_peak_above_base_bytes")
    gpu = ("gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes")
    out: dict[str, Any] = {
        f"launcher_{k}": record.get(k) for k in (*keys, "host_rss_sampled_peak_bytes", *gpu)
    }
    out.update({k: record.get(f"rank_{k}_max") for k in (*keys, *gpu)})
    out["host_rss_sampled_peak_bytes"] = None  # the sampler sees the launcher only
    # ... so it cannot see the kernel take the ranks' pages either: unknown, not "undisturbed".
    out.update(host_file_rss_drop_bytes=None, host_memory_disturbed=None, host_memory_disturbed_reason=None)
    out["host_memory_scope"] = "max over ranks (each rank's own VmHWM); launcher_* is the case process"
    return out


def _child_fields(child: dict[str, Any]) -> dict[str, Any]:
    """The child's figures (parameter counts, losses, technique metrics) as they are; status and timing
    are merged elsewhere."""
    skip = {
        "status",
        "error",
        "traceback_tail",
        "step_time_s",
        "step_cpu_time_s",
        "oom_requested_bytes",
        "memory_pass_measured_step_count",
        "memory_pass_warmup_step_count",
    }
    return {k: v for k, v in child.items() if k not in skip}


def _time_fields(
    case: CaseSpec, mem: PassResult, timing: list[PassResult], cpu_pressure: float | None = None
) -> dict[str, Any]:
    passes = [p for p in timing if p.status == "ok"] or ([mem] if mem.status == "ok" else [])
    if not passes:
        return {}
    by_repeat = [p.child.get("step_time_s", []) for p in passes]
    times = [t for rep in by_repeat for t in rep]
    cpu = [t for p in passes for t in p.child.get("step_cpu_time_s", [])]
    if not times:
        return {}
    med = statistics.median(times)
    child = mem.child
    cpu_med = statistics.median(cpu) if cpu else None
    disturbed, why = hostload.disturbed(times, cpu, cpu_pressure)
    return {
        "timing_source": "timing_pass" if timing and passes[0] is not mem else "memory_pass",
        "step_time_s": times,
        "step_time_s_by_repeat": by_repeat,
        "step_time_s_median": med,
        "step_time_s_iqr": iqr(times),
        "step_cpu_time_s": cpu,
        "step_cpu_time_s_median": cpu_med,
        "step_wall_over_cpu_ratio": round(med / cpu_med, 3) if cpu_med else None,
        "step_time_disturbed": disturbed,
        "step_time_disturbed_reason": why,
        "tokens_per_s": child.get("tokens_per_step", 0) / med if med > 0 else None,
        "samples_per_s": child.get("samples_per_step", 0) / med if med > 0 else None,
    }


# A workload's own figures that are times (generate's per-token latency, tokens/s): taken from the first
# timing pass when one ran, as step times are, not from the memory pass (its low mmap threshold slows
# allocation).
TIMED_SUFFIXES = ("_s_median", "_s_iqr", "_per_s")


def _timed_child_figures(timing: list[PassResult]) -> dict[str, Any]:
    first = next((p for p in timing if p.status == "ok"), None)
    if first is None:
        return {}
    return {k: v for k, v in first.child.items() if k.endswith(TIMED_SUFFIXES)}


def _compute_fields(case: CaseSpec, step_time_s: float) -> dict[str, Any]:
    """FLOPs per step, achieved FLOP/s and MFU (GPU peak table, or a cached CPU matmul calibration)."""
    from harness.analysis.flops import mfu_for_device

    device_name = None
    if case.device == "cuda":
        import torch

        device_name = torch.cuda.get_device_name(0)
    try:
        return mfu_for_device(case, step_time_s, device_name)
    except Exception as e:  # a calibration that cannot run here is a stated gap, not a failed case
        return {"mfu_unavailable_reason": f"{type(e).__name__}: {e}"[:300]}


def iqr(values: list[float]) -> float:
    """Inter-quartile range (linear interpolation, like numpy's default); 0 for fewer than 2 values."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]
