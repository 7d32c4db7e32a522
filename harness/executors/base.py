"""The executor interface and the value that crosses the wire: a finished record and its files."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.case import CaseSpec
from harness.errors import HarnessError

# A group: cases that share a baseline (same model, workload and shape). Its cases run on one node,
# one after another, so the ratios between them compare like with like.
Group = Sequence[CaseSpec]
OnStart = Callable[[CaseSpec], None]
# (case, pass name): called as each case process starts, "memory" or "timing 1/3" (local runs only).
PassProgress = Callable[[CaseSpec, str], None]


@dataclass(frozen=True)
class CaseResult:
    """What comes back from a node for one case: the record and its files, keyed by their path relative
    to the run directory (the timeline, profiles). Plain data, so it pickles across Ray and submitit."""

    case_id: str
    record: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutorOptions:
    """Command-line settings of the cluster executors (ignored by `local`)."""

    address: str | None = None  # ray: an existing cluster ("auto", "ray://host:10001"); None starts one
    local_nodes: int = 1  # ray without --address: logical nodes of the cluster started for the run
    slurm: dict[str, str] = field(default_factory=dict)  # submitit parameters, passed through
    folder: Path | None = None  # slurm: where submitit keeps job logs (default: the run dir)


class Executor(Protocol):
    name: str

    def run(
        self,
        groups: Sequence[Group],
        run_dir: Path,
        run_id: str,
        profile: str | None,
        on_start: OnStart,
        on_pass: PassProgress | None = None,
    ) -> Iterator[CaseResult]:
        """Run every group on one node each, yielding each case's result once it has arrived."""
        ...

    def close(self) -> None:
        """Cancel what is still outstanding and release what the executor started (idempotent)."""
        ...


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """`--slurm partition=gpu,gpus_per_node=1 --slurm time=60` -> {"partition": "gpu", ...}."""
    out: dict[str, str] = {}
    for chunk in pairs:
        for item in filter(None, (p.strip() for p in chunk.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                hint = "e.g. --slurm partition=gpu,time=60"
                raise HarnessError(f"--slurm {item!r}: expected key=value, {hint}")
            out[key.strip()] = value.strip()
    return out


def write_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Lay a node's files into the driver's run dir; refuses paths that would leave it."""
    root = run_dir.resolve()
    for rel, data in files.items():
        target = (run_dir / rel).resolve()
        if root not in target.parents:
            raise ValueError(f"a node returned a file outside the run directory: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def error_result(case: CaseSpec, run_id: str, cause: str) -> CaseResult:
    """A case whose worker, node or job died: an `error` record with the cause, never a hung driver."""
    from harness.runner.case_runner import error_record

    return CaseResult(case.case_id, error_record(case, run_id, cause))
