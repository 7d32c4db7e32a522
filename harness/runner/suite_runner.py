"""Run a loaded suite: each case in its own processes, results appended as they finish."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.executors.base import Executor, write_files
from harness.executors.local import LocalExecutor
from harness.results import provenance
from harness.results.store import RunStore
from harness.runner import exactness
from harness.runner.case_runner import now_iso
from harness.runner.preflight import detect_environment, prepare_reference, unsupported_reason
from harness.runner.sampler import Nvml
from harness.suite.load import LoadedSuite

# Where the preflight checks lived before executors; `harness list` and the tests import them here.
__all__ = [
    "RunOutcome",
    "detect_environment",
    "groups_of",
    "prepare_reference",
    "run_suite",
    "unsupported_reason",
]


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
        return _run_cases(suite, store, executor, progress, profile)
    finally:
        try:
            executor.close()
        finally:
            store.unlock()


def _run_cases(
    suite: LoadedSuite, store: RunStore, executor: Executor, progress: Progress | None, profile: str | None
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

    for result in executor.run(groups_of(list(todo.values())), store.path, store.run_id, profile, on_start):
        record = result.record
        write_files(store.path, result.files)
        key = exactness.baseline_key(record["spec"])
        if not record.get("techniques"):
            baselines[key] = record
        record.update(exactness.check(record, baselines.get(key)))
        store.append(record)
        if progress:
            progress(todo[result.case_id], record)
    store.update_manifest(ended_at=now_iso())
    wanted = {c.case_id for c in suite.cases}
    return RunOutcome(store, [r for r in store.records() if r["case_id"] in wanted])


def groups_of(cases: list[CaseSpec]) -> list[list[CaseSpec]]:
    """Cases sharing a baseline, in suite order, each group's baseline first: it runs before the cases
    whose exactness is checked against it, and (on a cluster) on the node they then run on."""
    groups: dict[str, list[CaseSpec]] = {}
    for case in cases:
        groups.setdefault(exactness.baseline_key(case.model_dump(mode="json")), []).append(case)
    return [sorted(g, key=lambda c: bool(c.techniques)) for g in groups.values()]


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
