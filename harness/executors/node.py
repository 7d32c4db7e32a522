"""What runs on the node that runs a group of cases: the same measurement as `harness run` on one machine.

A node decides for itself whether a case can run there (CUDA, packages), prepares the reference
weights, runs each case's memory pass, then the group's timing passes interleaved (A B C A B C, so
load that drifts during the group slows every technique alike), with the parent-side measurement next
to each case process. Each record is handed back as soon as its case's last pass ends. Nothing here
depends on which executor sent the work.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.executors.base import CaseResult, PassProgress
from harness.runner.case_runner import (
    CaseRun,
    error_record,
    finish_case,
    memory_pass,
    timing_pass,
    unsupported_record,
)
from harness.runner.preflight import detect_environment, prepare_reference, unsupported_reason
from harness.runner.sampler import Nvml
from harness.techniques.base import Environment


def node_identity() -> dict[str, Any]:
    """Which machine ran the case: enough to refuse comparing step times across different hardware."""
    from harness.results.provenance import cpu_model

    nvml = _nvml()
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_names": nvml.device_names(),
        "gpu_driver_version": nvml.driver_version(),
    }


@functools.cache
def _nvml() -> Nvml:
    return Nvml()


@functools.cache
def _environment() -> Environment:
    """What this node offers, detected once per process."""
    return detect_environment(_nvml())


def run_group_here(
    group: Sequence[CaseSpec],
    run_dir: Path,
    run_id: str,
    profile: str | None,
    on_pass: PassProgress | None = None,
) -> Iterator[dict[str, Any]]:
    """Memory passes one by one, then the timing passes interleaved; yields each case's record (with
    `node`) as soon as its last pass ends, the baseline's first."""
    nvml, me = _nvml(), node_identity()

    def done(item: CaseRun | dict[str, Any]) -> dict[str, Any]:
        if isinstance(item, CaseRun):
            if on_pass:
                on_pass(item.case, "results")
            item = finish_case(item, run_dir, run_id, nvml, profile)
        return {**item, "node": me}

    pending: list[CaseRun] = []
    for case in group:
        cr = _start(case, run_dir, run_id, nvml, on_pass)
        if isinstance(cr, CaseRun) and cr.wants_timing:
            pending.append(cr)
        else:
            yield done(cr)  # unsupported, a setup crash, no timing pass, or a failed memory pass
    while pending:
        for cr in list(pending):
            if on_pass:
                on_pass(cr.case, f"timing {len(cr.timing) + 1}/{cr.case.repeats}")
            timing_pass(cr, nvml)
            if not cr.wants_timing:
                pending.remove(cr)
                yield done(cr)


def _start(
    case: CaseSpec, run_dir: Path, run_id: str, nvml: Nvml, on_pass: PassProgress | None
) -> CaseRun | dict[str, Any]:
    """The case's memory pass, or its record when it cannot run: unsupported, or a crash while
    preparing it (reference weights, corpus, its files), which is the case's `error` with the cause,
    never the end of the suite."""
    stage = "checking support"
    try:
        reason = unsupported_reason(case, _environment())
        if reason:
            return unsupported_record(case, run_id, reason)
        stage = "preparing reference weights and corpus"
        prepare_reference(case)
        stage = "running the case"
        if on_pass:
            on_pass(case, "memory")
        return memory_pass(case, run_dir, nvml)
    except Exception as e:  # the record says what broke; the suite goes on
        cause = f"{type(e).__name__}: {e}".strip()
        return error_record(case, run_id, f"setup failed while {stage}: {cause}"[:1000])


def run_group_remote(case_jsons: Sequence[str], run_id: str, profile: str | None) -> list[CaseResult]:
    """A cluster task: run one group on this node in a scratch run dir; return its records and files."""
    cases = [CaseSpec.model_validate_json(text) for text in case_jsons]
    with tempfile.TemporaryDirectory(prefix="harness-node-") as tmp:
        run_dir = Path(tmp)
        return [
            CaseResult(rec["case_id"], rec, _files_under(run_dir, rec["case_id"]))
            for rec in run_group_here(cases, run_dir, run_id, profile)
        ]


def _files_under(run_dir: Path, case_id: str) -> dict[str, bytes]:
    case_dir = run_dir / "cases" / case_id
    if not case_dir.is_dir():
        return {}
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(case_dir.rglob("*")) if p.is_file()}
