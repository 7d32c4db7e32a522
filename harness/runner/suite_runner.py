"""Run a loaded suite: each case in its own processes, results appended as they finish.

The driver side. Where the cases run is the executor's business (harness/executors): locally by
default, or on a Ray cluster or as Slurm jobs; a group's cases always run together on one node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis import pairing
from harness.case import CaseSpec
from harness.executors.base import Executor, PassProgress, write_files
from harness.executors.local import LocalExecutor
from harness.results import provenance
from harness.results.store import RunStore
from harness.runner import exactness, hostload
from harness.runner.case_runner import now_iso
from harness.runner.sampler import Nvml
from harness.suite.load import LoadedSuite


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
    on_pass: PassProgress | None = None,
    executor: Executor | None = None,
) -> RunOutcome:
    """Run the suite's missing cases through `executor` (local by default), appending each record as it
    arrives; `started` is told the run directory as soon as it exists. The executor is closed
    (outstanding work cancelled) and the run directory unlocked whatever happens."""
    executor = executor or LocalExecutor()
    nvml = Nvml()
    store = _open_store(suite, results_root, resume, nvml)
    if started:
        started(store.path)
    try:
        return _run_cases(suite, store, executor, progress, profile, on_pass)
    finally:
        try:
            executor.close()
        finally:
            store.unlock()


def _run_cases(
    suite: LoadedSuite,
    store: RunStore,
    executor: Executor,
    progress: Progress | None,
    profile: str | None,
    on_pass: PassProgress | None,
) -> RunOutcome:
    store.update_manifest(executor=executor.name)
    done = store.done_ids()
    baselines = {
        exactness.baseline_key(r["spec"]): r
        for r in store.records()
        if not r.get("techniques") and isinstance(r.get("spec"), dict)  # a hand-edited line has no spec
    }
    todo = {c.case_id: c for c in suite.cases if c.case_id not in done}

    def on_start(case: CaseSpec) -> None:
        if progress:
            progress(case, None)

    groups = groups_of(list(todo.values()))
    for result in executor.run(groups, store.path, store.run_id, profile, on_start, on_pass):
        rec = result.record
        write_files(store.path, result.files)
        key = exactness.baseline_key(rec["spec"])
        if not rec.get("techniques"):
            baselines[key] = rec
        rec.update(exactness.check(rec, baselines.get(key)))
        rec.update(time_ratio_fields(rec, baselines.get(key)))
        rec.update(pairing.baseline_differences(rec, baselines.get(key)))
        rec.update(pairing.quality_vs_baseline(rec, baselines.get(key)))
        store.append(rec)
        if progress:
            progress(todo[result.case_id], rec)
    store.update_manifest(ended_at=now_iso(), **hostload.manifest_fields("end"))
    wanted = {c.case_id for c in suite.cases}
    return RunOutcome(store, [r for r in store.records() if r["case_id"] in wanted])


def groups_of(cases: list[CaseSpec]) -> list[list[CaseSpec]]:
    """Cases that share a baseline (same model, workload and shape), baseline first, in suite order: the
    unit an executor runs on one node, the baseline before the cases compared with it."""
    groups: dict[str, list[CaseSpec]] = {}
    for case in cases:
        groups.setdefault(exactness.baseline_key(case.model_dump(mode="json")), []).append(case)
    return [sorted(g, key=lambda c: bool(c.techniques)) for g in groups.values()]


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
