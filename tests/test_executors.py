"""Executors without a cluster: option parsing, grouping, the file contract, refusals before submitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.executors import ExecutorOptions, make_executor, parse_options
from harness.executors.base import write_files
from harness.executors.slurm import submitit_parameters
from harness.runner.suite_runner import groups_of
from harness.suite.load import load_suite

SUITE = """
version: 1
name: g
models: {a: {size: ci, n_layers: 1}, b: {size: ci, n_layers: 2}}
workloads: {train: {kind: train, batch_size: 2, seq_len: 32}}
techniques: {baseline: [], ckpt: [activation_checkpointing], sdpa: [sdpa_attention]}
matrix: {model: [a, b], workload: [train], techniques: [ckpt, baseline, sdpa]}
"""


def test_groups_keep_suite_order_with_each_baseline_first(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(SUITE)
    groups = groups_of(load_suite(path).cases)
    names = [[c.name for c in g] for g in groups]
    assert names == [
        ["a/train/baseline", "a/train/ckpt", "a/train/sdpa"],
        ["b/train/baseline", "b/train/ckpt", "b/train/sdpa"],
    ]


def test_slurm_options_pass_through_to_submitit() -> None:
    opts = parse_options(["partition=gpu,gpus_per_node=1", "time=60", "cluster=local"])
    cluster, params = submitit_parameters(opts)
    assert cluster == "local"
    assert params == {"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 60}


@pytest.mark.parametrize("bad", ["partition", "=gpu", "time="])
def test_malformed_slurm_option_is_one_line(bad: str) -> None:
    with pytest.raises(HarnessError, match=r"expected key=value, e\.g\. --slurm partition=gpu,time=60"):
        parse_options([bad])


def test_unknown_executor_names_the_choices() -> None:
    with pytest.raises(HarnessError, match="choose one of local, ray, slurm"):
        make_executor("kubernetes")


def test_node_files_cannot_leave_the_run_directory(tmp_path: Path) -> None:
    write_files(tmp_path, {"cases/x/timeline.json": b"{}"})
    assert (tmp_path / "cases/x/timeline.json").read_bytes() == b"{}"
    with pytest.raises(ValueError, match="outside the run directory"):
        write_files(tmp_path / "run", {"../escaped.txt": b"x"})
    assert not (tmp_path / "escaped.txt").exists()


class _FakeRay:
    """ray.nodes() as a cluster without the harness_node resource reports it."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes


def _check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nodes: list[dict[str, Any]], device: str) -> None:
    pytest.importorskip("ray")
    import sys

    from harness.executors.ray_exec import RayExecutor

    path = tmp_path / "g.yaml"
    path.write_text(SUITE.replace("name: g", f"name: g\ndefaults: {{device: {device}}}"))
    cases = load_suite(path).cases
    monkeypatch.setitem(sys.modules, "ray", _FakeRay(nodes))
    executor = RayExecutor.__new__(RayExecutor)
    executor.options = ExecutorOptions(address="auto")
    executor.check(groups_of(cases))


def test_a_cluster_without_the_per_node_resource_is_refused_before_submitting(monkeypatch, tmp_path) -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}]
    with pytest.raises(
        HarnessError, match=r"no node of auto offers the 'harness_node' resource; start each node"
    ):
        _check(monkeypatch, tmp_path, nodes, "cpu")


def test_cuda_cases_on_a_cluster_without_gpus_are_refused_before_submitting(monkeypatch, tmp_path) -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "harness_node": 1.0}}]
    _check(monkeypatch, tmp_path, nodes, "cpu")  # satisfiable: no error
    with pytest.raises(HarnessError, match="device cuda cases but no node offering 'harness_node' has a GPU"):
        _check(monkeypatch, tmp_path, nodes, "cuda")


def test_compare_refuses_step_times_across_different_hardware(tmp_path: Path) -> None:
    from harness.compare import compare_snapshots
    from harness.compare.judge import NOT_COMPARABLE
    from harness.compare.policy import load_policy
    from harness.compare.snapshot import load_snapshot
    from tests.fixtures_results import make_manifest, smoke_records, write_run

    def run(run_id: str, cpu: str) -> Path:
        recs = smoke_records(run_id)
        for r in recs:
            r["node"] = {"host": "n1", "cpu_model": cpu, "gpu_names": []}
            r["timing_source"] = "timing_pass"
        return write_run(tmp_path / "r", recs, make_manifest(run_id))

    policy = load_policy(None)
    names = list(policy.for_suite(None))
    base = load_snapshot(run("run-a", "AMD EPYC 7B13"), names)
    for cpu, expected in (("AMD EPYC 7B13", False), ("Intel Xeon 8480", True)):
        cur = load_snapshot(run(f"run-{len(cpu)}", cpu), names)
        times = [v for v in compare_snapshots(base, cur, policy).verdicts if v.kind == "time"]
        assert times
        blocked = [v for v in times if v.status == NOT_COMPARABLE and "different hardware" in v.detail]
        assert bool(blocked) == expected
        assert all(v.status == NOT_COMPARABLE for v in times) == expected
