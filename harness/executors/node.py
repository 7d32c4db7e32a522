"""What runs on the node that runs a case: the same measurement as `harness run` on one machine.

A node decides for itself whether a case can run there (CUDA, packages), prepares the reference
weights, runs the case process with the parent-side measurement next to it, and returns the record
with the files the case wrote. Nothing here depends on which executor sent the work.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.executors.base import CaseResult
from harness.techniques.base import Environment


def node_identity() -> dict[str, Any]:
    """Which machine ran the case: enough to refuse comparing step times across different hardware."""
    from harness.results.provenance import cpu_model
    from harness.runner.sampler import Nvml

    nvml = Nvml()
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_names": nvml.device_names(),
        "gpu_driver_version": nvml.driver_version(),
    }


def run_case_here(case: CaseSpec, run_dir: Path, run_id: str, profile: str | None) -> dict[str, Any]:
    """One case on this machine, files written under run_dir/cases/<id>/; the record gets `node`."""
    record = _run_or_error(case, run_dir, run_id, profile)
    record["node"] = node_identity()
    return record


def _run_or_error(case: CaseSpec, run_dir: Path, run_id: str, profile: str | None) -> dict[str, Any]:
    """The case's record, whatever happens: a crash while preparing it (reference weights, corpus, its
    files) is the case's `error` with the cause, never the end of the suite."""
    from harness.runner.case_runner import error_record, run_case, unsupported_record
    from harness.runner.preflight import prepare_reference, unsupported_reason
    from harness.runner.sampler import Nvml

    stage = "checking support"
    try:
        reason = unsupported_reason(case, _environment())
        if reason:
            return unsupported_record(case, run_id, reason)
        stage = "preparing reference weights and corpus"
        prepare_reference(case)
        stage = "running the case"
        return run_case(case, run_dir, run_id, Nvml(), profile)
    except Exception as e:  # the record says what broke; the suite goes on
        cause = f"{type(e).__name__}: {e}".strip()
        return error_record(case, run_id, f"setup failed while {stage}: {cause}"[:1000])


@functools.cache
def _environment() -> Environment:
    """What this node offers, detected once per process (it imports torch)."""
    from harness.runner.preflight import detect_environment

    return detect_environment()


def run_case_remote(case_json: str, run_id: str, profile: str | None) -> CaseResult:
    """A cluster task: run one case in a scratch run dir on this node; return its record and files."""
    case = CaseSpec.model_validate_json(case_json)
    with tempfile.TemporaryDirectory(prefix="harness-node-") as tmp:
        run_dir = Path(tmp)
        record = run_case_here(case, run_dir, run_id, profile)
        return CaseResult(case.case_id, record, _files_under(run_dir, case.case_id))


def _files_under(run_dir: Path, case_id: str) -> dict[str, bytes]:
    case_dir = run_dir / "cases" / case_id
    if not case_dir.is_dir():
        return {}
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(case_dir.rglob("*")) if p.is_file()}
