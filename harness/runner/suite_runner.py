"""Run a loaded suite: each case in its own processes, results appended as they finish."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import workloads as wlreg
from harness.analysis import pairing
from harness.case import CaseSpec
from harness.results import provenance
from harness.results.store import RunStore
from harness.runner import exactness, hostload
from harness.runner.case_runner import (
    CaseRun,
    error_record,
    finish_case,
    memory_pass,
    now_iso,
    timing_pass,
    unsupported_record,
)
from harness.runner.sampler import Nvml
from harness.runner.session import context_for, techniques_for
from harness.suite.load import LoadedSuite
from harness.techniques.base import Environment
from harness.workloads.base import Workload


def detect_environment(nvml: Nvml | None = None) -> Environment:
    if nvml is not None and no_gpu_here(nvml):  # the parent need not import torch to know
        return Environment(cuda_available=False, cpu_flags=_cpu_flags())
    import torch

    cuda = torch.cuda.is_available()
    return Environment(
        cuda_available=cuda,
        cuda_device_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_capability=tuple(torch.cuda.get_device_capability(0)) if cuda else None,
        cpu_flags=_cpu_flags(),
    )


def no_gpu_here(nvml: Nvml) -> bool:
    """True when NVML found no NVIDIA driver and there is no other GPU device node (ROCm's /dev/kfd)."""
    return nvml.reason is not None and "driver" in nvml.reason and not Path("/dev/kfd").exists()


def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset({platform.machine()})


def unsupported_reason(case: CaseSpec, env: Environment) -> str | None:
    """Why this case cannot run on this machine, decided before a process is spent on it."""
    if case.device == "cuda" and not env.cuda_available:
        return "device cuda requested, but CUDA is not available on this machine"
    ctx = context_for(case)
    techs = techniques_for(case)
    for tech in techs:
        if reason := tech.workload_reason(case.workload_kind, wlreg.get(case.workload_kind).trains):
            return reason
        reason = tech.unsupported_reason(env, ctx) or tech.combination_reason(
            [t for t in techs if t is not tech], ctx
        )
        if reason:
            return f"{tech.name}: {reason}"
    return None


def prepare_reference(case: CaseSpec) -> None:
    """Train (or find in the cache) the case's reference weights here, so the case process only loads
    them: the training is no part of the case's time or memory. The workload may have its own (a
    distill case's reference teacher)."""
    workload_cls = wlreg.get(case.workload_kind)
    workload = workload_cls(workload_cls.Config.model_validate(case.workload))
    if not case.uses_reference_weights and type(workload).prepare is Workload.prepare:
        return  # nothing to train or load: the parent need not import torch for this case
    import torch

    torch.set_num_threads(case.threads)  # the reduction order, hence the trained weights, follow it
    if case.uses_reference_weights:
        from harness.data import reference_weights
        from harness.models.source import config_of

        reference_weights(case, config_of(case.model))
    workload.prepare(case)


@dataclass
class RunOutcome:
    store: RunStore
    records: list[dict[str, Any]]


Progress = Callable[[CaseSpec, dict[str, Any] | None], None]
# (case, pass name): called as each case process starts, "memory" or "timing 1/3".
PassProgress = Callable[[CaseSpec, str], None]


def run_suite(
    suite: LoadedSuite,
    results_root: Path,
    resume: Path | None = None,
    progress: Progress | None = None,
    profile: str | None = None,
    started: Callable[[Path], None] | None = None,
    on_pass: PassProgress | None = None,
) -> RunOutcome:
    """Run the suite's missing cases; `started` is told the run directory as soon as it exists."""
    nvml = Nvml()
    env = detect_environment(nvml)
    store = _open_store(suite, results_root, resume, nvml)
    if started:
        started(store.path)
    try:
        return _run_cases(suite, store, env, nvml, progress, profile, on_pass)
    finally:
        store.unlock()


def _run_cases(
    suite: LoadedSuite,
    store: RunStore,
    env: Environment,
    nvml: Nvml,
    progress: Progress | None,
    profile: str | None,
    on_pass: PassProgress | None = None,
) -> RunOutcome:
    done = store.done_ids()
    baselines = {
        exactness.baseline_key(r["spec"]): r
        for r in store.records()
        if not r.get("techniques") and isinstance(r.get("spec"), dict)  # a hand-edited line has no spec
    }
    for group in _groups([c for c in suite.cases if c.case_id not in done]):
        _run_group(group, store, env, nvml, baselines, progress, on_pass, profile)
    store.update_manifest(ended_at=now_iso(), **hostload.manifest_fields("end"))
    wanted = {c.case_id for c in suite.cases}
    return RunOutcome(store, [r for r in store.records() if r["case_id"] in wanted])


def _groups(cases: list[CaseSpec]) -> list[list[CaseSpec]]:
    """Cases that share a baseline (same model, workload and shape), baseline first, in suite order."""
    groups: dict[str, list[CaseSpec]] = {}
    for case in cases:
        groups.setdefault(exactness.baseline_key(case.model_dump(mode="json")), []).append(case)
    # Baselines first, so a technique meant to be exact can be checked against its baseline's losses.
    return [sorted(g, key=lambda c: bool(c.techniques)) for g in groups.values()]


def _run_group(
    group: list[CaseSpec],
    store: RunStore,
    env: Environment,
    nvml: Nvml,
    baselines: dict[str, dict[str, Any]],
    progress: Progress | None,
    on_pass: PassProgress | None,
    profile: str | None,
) -> None:
    """Memory passes one by one, then the timing passes interleaved (A B C A B C, not A A B B C C) so
    that load which drifts during the group slows every technique alike. Each case's record is written
    as soon as its last pass ends (the baseline's first, so the others can be compared with it)."""

    def record(item: CaseRun | dict[str, Any]) -> None:
        if isinstance(item, CaseRun):
            if on_pass:
                on_pass(item.case, "results")
            rec = finish_case(item, store.path, store.run_id, nvml, profile)
        else:
            rec = item
        key = exactness.baseline_key(rec["spec"])
        if not rec.get("techniques"):
            baselines[key] = rec
        rec.update(exactness.check(rec, baselines.get(key)))
        rec.update(time_ratio_fields(rec, baselines.get(key)))
        rec.update(pairing.baseline_differences(rec, baselines.get(key)))
        rec.update(pairing.quality_vs_baseline(rec, baselines.get(key)))
        store.append(rec)
        if progress:
            progress(next(c for c in group if c.case_id == rec["case_id"]), rec)

    pending: list[CaseRun] = []
    for case in group:
        if progress:
            progress(case, None)
        cr = _start(case, store, env, nvml, on_pass)
        if not isinstance(cr, CaseRun):
            record(cr)
        elif cr.wants_timing:
            pending.append(cr)
        else:
            record(cr)  # no timing pass, or a failed memory pass: nothing more to run
    while pending:
        for cr in list(pending):
            if on_pass:
                on_pass(cr.case, f"timing {len(cr.timing) + 1}/{cr.case.repeats}")
            timing_pass(cr, nvml)
            if not cr.wants_timing:
                pending.remove(cr)
                record(cr)


def _start(
    case: CaseSpec, store: RunStore, env: Environment, nvml: Nvml, on_pass: PassProgress | None
) -> CaseRun | dict[str, Any]:
    """The case's memory pass, or its record when it cannot run: unsupported, or a crash while
    preparing it (reference weights, corpus, its files), which is the case's `error` with the cause,
    never the end of the suite."""
    stage = "checking support"
    try:
        reason = unsupported_reason(case, env)
        if reason:
            return unsupported_record(case, store.run_id, reason)
        stage = "preparing reference weights and corpus"
        prepare_reference(case)
        stage = "running the case"
        if on_pass:
            on_pass(case, "memory")
        return memory_pass(case, store.path, nvml)
    except Exception as e:  # the record says what broke; the suite goes on
        cause = f"{type(e).__name__}: {e}".strip()
        return error_record(case, store.run_id, f"setup failed while {stage}: {cause}"[:1000])


def time_ratio_fields(record: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Step time and step CPU time as ratios to the group's baseline, the time ratio with its 95 %
    bootstrap interval, and whether either side's times were disturbed (waited for a core)."""
    if not baseline or baseline is record or not record.get("techniques"):
        return {}
    times, base = record.get("step_time_s") or [], baseline.get("step_time_s") or []
    ratio = hostload.ratio_interval(times, base)
    if ratio is None:
        return {}
    cpu, base_cpu = record.get("step_cpu_time_s_median"), baseline.get("step_cpu_time_s_median")
    flags = (record.get("step_time_disturbed"), baseline.get("step_time_disturbed"))
    return {
        "step_time_vs_baseline_ratio": round(ratio[0], 4),
        "step_time_vs_baseline_ci95_low_ratio": round(ratio[1], 4),
        "step_time_vs_baseline_ci95_high_ratio": round(ratio[2], 4),
        "step_cpu_time_vs_baseline_ratio": round(cpu / base_cpu, 4) if cpu and base_cpu else None,
        "step_time_vs_baseline_disturbed": None if None in flags else any(flags),
    }


def _open_store(suite: LoadedSuite, root: Path, resume: Path | None, nvml: Nvml) -> RunStore:
    if resume is not None:
        store = RunStore.open_existing(resume, suite.sha256)
        store.update_manifest(resumed_at=now_iso(), ended_at=None)
        return store
    manifest = {
        "suite_path": suite.path,
        "suite_name": suite.name,
        "suite_sha256": suite.sha256,
        "case_count": len(suite.cases),
        "started_at": now_iso(),
        "ended_at": None,
        **provenance.collect(nvml.device_names(), nvml.driver_version()),
        **hostload.manifest_fields("start"),
    }
    return RunStore.create(root, suite.name, manifest)
