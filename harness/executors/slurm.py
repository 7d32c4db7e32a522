"""`--executor slurm`: one Slurm job per case through submitit, the same record contract as `local`.

`--slurm key=value,...` is passed to submitit: its generic names (timeout_min, gpus_per_node,
cpus_per_task, mem_gb, nodes, tasks_per_node) as they are, `time` as timeout_min (minutes), anything
else as `slurm_<key>` (partition, account, qos, constraint, ...). `--slurm cluster=local` runs the jobs
as local processes through submitit's own local executor (how the tests run it without Slurm).
A group's baseline runs first; its other cases are then pinned to the node it ran on (nodelist).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.errors import HarnessError
from harness.executors.base import CaseResult, ExecutorOptions, Group, OnStart
from harness.executors.node import run_case_remote
from harness.executors.ray_exec import error_result

GENERIC = {"timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "nodes", "tasks_per_node", "name"}
POLL_S = 0.5


def submitit_parameters(options: dict[str, str]) -> tuple[str | None, dict[str, Any]]:
    """(`cluster` or None, the parameters for AutoExecutor.update_parameters)."""
    params: dict[str, Any] = {}
    cluster = None
    for key, value in options.items():
        typed: Any = int(value) if value.isdigit() else value
        if key == "cluster":
            cluster = value
        elif key == "time":
            params["timeout_min"] = typed
        elif key in GENERIC or key.startswith("slurm_"):
            params[key] = typed
        else:
            params[f"slurm_{key}"] = typed
    return cluster, params


class SlurmExecutor:
    name = "slurm"

    def __init__(self, options: ExecutorOptions) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise HarnessError("--executor slurm needs submitit: pip install 'harness[slurm]'") from None
        self.options = options
        self._pending: dict[str, tuple[Any, CaseSpec]] = {}

    def _executor(self, run_dir: Path) -> Any:
        import submitit

        cluster, params = submitit_parameters(self.options.slurm)
        folder = self.options.folder or run_dir / "slurm" / "%j"
        try:
            ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
            ex.update_parameters(**params)
        except (ValueError, TypeError, RuntimeError) as e:
            raise HarnessError(f"--slurm: {e}") from None
        return ex

    def run(
        self, groups: Sequence[Group], run_dir: Path, run_id: str, profile: str | None, on_start: OnStart
    ) -> Iterator[CaseResult]:
        ex = self._executor(run_dir)
        followers: dict[str, list[CaseSpec]] = {}
        for group in groups:
            head, *rest = group
            followers[head.case_id] = rest
            self._submit(ex, head, run_id, profile, on_start, None)
        while self._pending:
            finished = [k for k, (job, _) in self._pending.items() if job.done()]
            if not finished:
                time.sleep(POLL_S)
                continue
            for key in finished:
                job, case = self._pending.pop(key)
                try:
                    result = job.result()
                except Exception as e:  # the job failed or was killed: this case's result
                    cause = f"slurm job {job.job_id}: {type(e).__name__}: {e}"
                    result = error_result(case, run_id, cause[:500])
                host = (result.record.get("node") or {}).get("host")
                for nxt in followers.pop(case.case_id, []):
                    self._submit(ex, nxt, run_id, profile, on_start, host)
                yield result

    def _submit(self, ex: Any, case: CaseSpec, run_id: str, profile: str | None, on_start: OnStart,
                host: str | None) -> None:  # fmt: skip
        on_start(case)
        if host and ex.cluster == "slurm":
            ex.update_parameters(slurm_additional_parameters={"nodelist": host})
        job = ex.submit(run_case_remote, case.model_dump_json(), run_id, profile)
        self._pending[case.case_id] = (job, case)

    def close(self) -> None:
        for job, _ in self._pending.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        self._pending.clear()
