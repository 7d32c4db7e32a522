"""Run a loaded suite: each case in its own processes, results appended as they finish."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import workloads as wlreg
from harness.case import CaseSpec
from harness.results import provenance
from harness.results.store import RunStore
from harness.runner import exactness
from harness.runner.case_runner import error_record, now_iso, run_case, unsupported_record
from harness.runner.sampler import Nvml
from harness.runner.session import context_for, techniques_for
from harness.suite.load import LoadedSuite
from harness.techniques.base import Environment


def detect_environment() -> Environment:
    import torch

    cuda = torch.cuda.is_available()
    return Environment(
        cuda_available=cuda,
        cuda_device_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_capability=tuple(torch.cuda.get_device_capability(0)) if cuda else None,
        cpu_flags=_cpu_flags(),
    )


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
    import torch

    torch.set_num_threads(case.threads)  # the reduction order, hence the trained weights, follow it
    if case.uses_reference_weights:
        from harness.data import reference_weights
        from harness.models.config import ModelConfig

        reference_weights(case, ModelConfig(**case.model))
    workload = wlreg.get(case.workload_kind)
    workload(workload.Config.model_validate(case.workload)).prepare(case)


@dataclass
class RunOutcome:
    store: RunStore
    records: list[dict[str, Any]]


Progress = Callable[[CaseSpec, dict[str, Any] | None], None]


def run_suite(
    suite: LoadedSuite,
    results_root: Path,
    resume: Path | None = None,
    progress: Progress | None = None,
    profile: str | None = None,
    started: Callable[[Path], None] | None = None,
) -> RunOutcome:
    """Run the suite's missing cases; `started` is told the run directory as soon as it exists."""
    nvml = Nvml()
    env = detect_environment()
    store = _open_store(suite, results_root, resume, nvml)
    if started:
        started(store.path)
    try:
        return _run_cases(suite, store, env, nvml, progress, profile)
    finally:
        store.unlock()


def _run_cases(
    suite: LoadedSuite,
    store: RunStore,
    env: Environment,
    nvml: Nvml,
    progress: Progress | None,
    profile: str | None,
) -> RunOutcome:
    done = store.done_ids()
    baselines = {
        exactness.baseline_key(r["spec"]): r
        for r in store.records()
        if not r.get("techniques") and isinstance(r.get("spec"), dict)  # a hand-edited line has no spec
    }
    # Baselines first, so a technique meant to be exact can be checked against its baseline's losses.
    for case in sorted(suite.cases, key=lambda c: bool(c.techniques)):
        if case.case_id in done:
            continue
        if progress:
            progress(case, None)
        record = _run_one(case, store, env, nvml, profile)
        key = exactness.baseline_key(record["spec"])
        if not case.techniques:
            baselines[key] = record
        record.update(exactness.check(record, baselines.get(key)))
        store.append(record)
        if progress:
            progress(case, record)
    store.update_manifest(ended_at=now_iso())
    wanted = {c.case_id for c in suite.cases}
    return RunOutcome(store, [r for r in store.records() if r["case_id"] in wanted])


def _run_one(
    case: CaseSpec, store: RunStore, env: Environment, nvml: Nvml, profile: str | None
) -> dict[str, Any]:
    """The case's record, whatever happens: a crash while preparing it (reference weights, corpus, its
    files) is the case's `error` with the cause, never the end of the suite."""
    stage = "checking support"
    try:
        reason = unsupported_reason(case, env)
        if reason:
            return unsupported_record(case, store.run_id, reason)
        stage = "preparing reference weights and corpus"
        prepare_reference(case)
        stage = "running the case"
        return run_case(case, store.path, store.run_id, nvml, profile)
    except Exception as e:  # the record says what broke; the suite goes on
        cause = f"{type(e).__name__}: {e}".strip()
        return error_record(case, store.run_id, f"setup failed while {stage}: {cause}"[:1000])


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
    }
    return RunStore.create(root, suite.name, manifest)
