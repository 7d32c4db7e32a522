"""`--executor slurm`: one Slurm job per group of cases through submitit, the same record contract as
`local`: inside the job the group's cases run one process at a time, so the ratios in a group compare
one machine with itself.

`--slurm key=value,...` is passed to submitit: its generic names (timeout_min, gpus_per_node,
cpus_per_task, mem_gb, nodes, tasks_per_node) as they are, `time` as timeout_min (minutes), anything
else as `slurm_<key>` (partition, account, qos, constraint, ...). `--slurm cluster=local` runs the jobs
as local processes through submitit's own local executor (how the tests run it without Slurm).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.errors import HarnessError
from harness.executors.base import CaseResult, ExecutorOptions, Group, OnStart, PassProgress, error_result
from harness.executors.node import run_group_remote

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
        self._pending: dict[str, tuple[Any, list[CaseSpec]]] = {}

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
        self,
        groups: Sequence[Group],
        run_dir: Path,
        run_id: str,
        profile: str | None,
        on_start: OnStart,
        on_pass: PassProgress | None = None,
    ) -> Iterator[CaseResult]:
        ex = self._executor(run_dir)
        for i, group in enumerate(groups):
            for case in group:
                on_start(case)
            job = ex.submit(run_group_remote, [c.model_dump_json() for c in group], run_id, profile)
            self._pending[str(i)] = (job, list(group))
        while self._pending:
            finished = [k for k, (job, _) in self._pending.items() if job.done()]
            if not finished:
                time.sleep(POLL_S)
                continue
            for key in finished:
                job, group = self._pending.pop(key)
                try:
                    results = job.result()
                except Exception as e:  # the job failed or was killed: the group's result
                    cause = f"slurm job {job.job_id}: {type(e).__name__}: {e}"[:500]
                    results = [error_result(case, run_id, cause) for case in group]
                yield from results

    def close(self) -> None:
        for job, _ in self._pending.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        self._pending.clear()
