"""`--executor ray`: each group of cases as one Ray task, one task per node at a time, results in
completion order.

One case per node: every node that may run cases offers one unit of the custom resource
`harness_node`, and every group task asks for one; inside it the group's cases run one process at a
time, exactly as locally (memory passes, then interleaved timing passes), so the ratios in a group
compare one machine with itself. A cluster started for the run (no --address) is stopped by the
process ids it started, never by a command that stops every Ray process on the host.

Ray >= 2.52 has token authentication (RAY_AUTH_MODE=token, default on for local clusters from 2.59):
the cluster started here authenticates by itself; for an existing cluster set RAY_AUTH_TOKEN (or
RAY_AUTH_TOKEN_PATH) in the driver's environment as for any Ray client. Ray removed `local_mode`, so
the tests run a real local cluster of logical nodes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.case import CaseSpec
from harness.errors import HarnessError
from harness.executors.base import CaseResult, ExecutorOptions, Group, OnStart, PassProgress, error_result
from harness.executors.node import run_group_remote

RESOURCE = "harness_node"
START_HINT = f"start each node with: ray start ... --resources='{{\"{RESOURCE}\": 1}}'"


def _task(case_jsons: list[str], run_id: str, profile: str | None) -> list[CaseResult]:
    """The Ray task: the node-side run of one group; each record names the Ray node it ran on."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    results = run_group_remote(case_jsons, run_id, profile)
    for result in results:
        result.record["node"]["ray_node_id"] = node
    return results


class RayExecutor:
    name = "ray"

    def __init__(self, options: ExecutorOptions) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise HarnessError(
                "--executor ray needs Ray: pip install 'harness[ray]' (with torch==2.13.0 on the same "
                "command line on a CPU machine)"
            ) from None
        self.options = options
        self._cluster: Any = None
        self._pending: dict[Any, list[CaseSpec]] = {}
        self._own: set[tuple[int, float]] = set()

    # ---- connecting
    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.options.address:
            try:
                ray.init(address=self.options.address, log_to_driver=False)
            except ConnectionError as e:
                where = self.options.address
                raise HarnessError(f"--address {where}: cannot reach a Ray cluster ({e})") from None
            return
        self._start_local_cluster()

    def _start_local_cluster(self) -> None:
        from ray.cluster_utils import Cluster

        n = max(1, self.options.local_nodes)
        per_node = max(1, (os.cpu_count() or 1) // n)
        args = {"num_cpus": per_node, "resources": {RESOURCE: 1}, "include_dashboard": False}
        self._cluster = Cluster(initialize_head=True, connect=True, head_node_args=args)
        for _ in range(n - 1):
            self._cluster.add_node(**args)
        self._cluster.wait_for_nodes()
        self._own = _descendants()

    # ---- checking, before anything is submitted
    def check(self, groups: Sequence[Group]) -> None:
        """Refuse requests the cluster can never satisfy (Ray would leave such a task pending forever)."""
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        with_slot = [n for n in nodes if n.get("Resources", {}).get(RESOURCE, 0) >= 1]
        if not with_slot:
            where = self.options.address or "the local cluster"
            problem = f"no node of {where} offers the '{RESOURCE}' resource"
            raise HarnessError(f"--executor ray: {problem}; {START_HINT}")
        cuda = any(c.device == "cuda" for g in groups for c in g)
        if cuda and not any(n["Resources"].get("GPU", 0) >= 1 for n in with_slot):
            raise HarnessError(
                "--executor ray: the suite has device cuda cases but no node offering "
                f"'{RESOURCE}' has a GPU; add GPU nodes or run the cpu cases only"
            )

    # ---- running
    def _submit(self, group: Group, run_id: str, profile: str | None) -> None:
        import ray

        options: dict[str, Any] = {"resources": {RESOURCE: 1}, "num_cpus": 0, "max_retries": 0}
        if any(c.device == "cuda" for c in group):
            options["num_gpus"] = 1  # Ray pins it: CUDA_VISIBLE_DEVICES reaches the case processes
        payload = [c.model_dump_json() for c in group]
        self._pending[ray.remote(_task).options(**options).remote(payload, run_id, profile)] = list(group)

    def run(
        self,
        groups: Sequence[Group],
        run_dir: Path,
        run_id: str,
        profile: str | None,
        on_start: OnStart,
        on_pass: PassProgress | None = None,
    ) -> Iterator[CaseResult]:
        import ray

        self._connect()
        self.check(groups)
        for group in groups:
            for case in group:
                on_start(case)
            self._submit(group, run_id, profile)
        while self._pending:
            (ref,), _ = ray.wait(list(self._pending), num_returns=1)
            group = self._pending.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as e:  # worker or node died, or the task raised: the group's result
                results = [error_result(case, run_id, _cause(e)) for case in group]
            yield from results

    def close(self) -> None:
        import ray

        for ref in list(self._pending):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)  # kills the worker; its case process dies with it
        self._pending.clear()
        if self._cluster is not None:
            started = self._own | _descendants()
            with contextlib.suppress(Exception):
                self._cluster.shutdown()
            _kill_survivors(started)
            self._cluster = None
        elif ray.is_initialized():
            ray.shutdown()  # an existing cluster: disconnect only


def _cause(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"ray: {type(e).__name__}: {first}".rstrip(": ")


def _descendants() -> set[tuple[int, float]]:
    """(pid, start time) of every process below this one: the start time guards against a reused pid."""
    import psutil

    out = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out.add((p.pid, p.create_time()))
    return out


def _kill_survivors(started: set[tuple[int, float]]) -> None:
    """Ray processes this run started that outlived the cluster's shutdown: killed by pid, nothing else."""
    import psutil

    for pid, created in started:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()
