"""Cases on a real local Ray cluster (two logical nodes) and through submitit's local executor.

The cluster is started by this module and stopped by the process ids it started, never by a command
that stops every Ray process on the host. Waits below are bounded polls for an event, not timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ray = pytest.importorskip("ray", reason="the cluster tier needs harness[ray]")
psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.slow

T = TypeVar("T")
SUITE = """
version: 1
name: {name}
defaults: {{warmup_steps: 1, measured_steps: {steps}, quality: false, timeout_s: 600}}
models: {{tiny: {{size: ci, n_layers: 1}}, tiny2: {{size: ci, n_layers: 2}}}}
workloads: {{train: {{kind: train, batch_size: 2, seq_len: 32}}}}
techniques: {{baseline: [], ckpt: [activation_checkpointing]}}
matrix: {{model: [{models}], workload: [train], techniques: [{techniques}]}}
"""


def _suite(
    tmp: Path, name: str, steps: int = 2, techniques: str = "baseline, ckpt", models: str = "tiny"
) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, steps=steps, techniques=techniques, models=models))
    return path


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _on(cluster: str, suite: Path, results: Path) -> list[str]:
    return _harness("run", str(suite), "--results", str(results), "--executor", "ray", "--address", cluster)


def _poll(what: str, fn: Callable[[], T | None], limit_s: float = 600) -> T:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {limit_s:.0f} s")


def _mine() -> set[tuple[int, float]]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out.add((p.pid, p.create_time()))
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from ray.cluster_utils import Cluster

    before = _mine()
    args = {"num_cpus": 1, "resources": {"harness_node": 1}, "include_dashboard": False}
    c = Cluster(initialize_head=True, connect=False, head_node_args=args)
    c.add_node(**args)
    started = _mine() - before
    yield str(c.address)
    c.shutdown()
    for pid, created in started | (_mine() - before):  # whatever outlived shutdown: by pid only
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()


def _records(root: Path) -> list[dict[str, Any]]:
    runs = list(root.glob("*/results.jsonl"))
    if not runs:
        return []
    return [json.loads(line) for line in runs[0].read_text().splitlines() if line.strip()]


def _case_children() -> list[Any]:
    """Case processes started on a node by this test's cluster (scratch dirs are harness-node-*)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "harness.runner.child" in cmd and "harness-node-" in cmd:
            out.append(p)
    return out


def test_ray_records_match_local_ones(cluster: str, tmp_path: Path) -> None:
    suite = _suite(tmp_path, "same")
    local = subprocess.run(_harness("run", str(suite), "--results", str(tmp_path / "l")), capture_output=True)
    on_ray = subprocess.run(
        _harness(
            "run", str(suite), "--results", str(tmp_path / "r"), "--executor", "ray", "--address", cluster
        ),
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0 and on_ray.returncode == 0, on_ray.stderr[-2000:]
    a = {r["case_id"]: r for r in _records(tmp_path / "l")}
    b = {r["case_id"]: r for r in _records(tmp_path / "r")}
    assert a.keys() == b.keys() and len(a) == 2
    for cid, rec in b.items():
        assert rec["status"] == "ok" and rec["node"]["ray_node_id"]
        assert rec["breakdown"]["tensor_peak_bytes"] == a[cid]["breakdown"]["tensor_peak_bytes"]
        drift = abs(rec["host_rss_peak_above_base_bytes"] - a[cid]["host_rss_peak_above_base_bytes"])
        pressed = [r["host_memory_disturbed_reason"] for r in (rec, a[cid]) if r["host_memory_disturbed"]]
        # the gate's A/A policy, on figures no memory pressure lowered (those the gate does not judge)
        assert pressed or drift <= max(2**20, 0.005 * a[cid]["host_rss_peak_above_base_bytes"]), pressed
        assert (
            next((tmp_path / "r").iterdir()) / rec["timeline_file"]
        ).is_file()  # shipped back from the node
    assert len({r["node"]["ray_node_id"] for r in b.values()}) == 1  # a group stays on its baseline's node


def test_worker_killed_mid_case_is_an_error_and_leaves_no_process(cluster: str, tmp_path: Path) -> None:
    suite = _suite(tmp_path, "killed", steps=5000, techniques="baseline")
    cmd = _harness(
        "run", str(suite), "--results", str(tmp_path / "r"), "--executor", "ray", "--address", cluster
    )
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    child = _poll("the case process to start on a node", lambda: (_case_children() or [None])[0])
    worker = psutil.Process(child.ppid())
    if "harness.runner.zygote" in " ".join(worker.cmdline()):  # forked from the worker's fork server
        worker = worker.parent()
    os.kill(worker.pid, signal.SIGKILL)
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 1, err[-2000:]  # a failed case: exit 1, not a hung or crashed driver
    (rec,) = _records(tmp_path / "r")
    assert rec["status"] == "error" and rec["error"].startswith("ray: "), rec["error"]
    _poll(
        "the orphaned case process to be gone", lambda: not psutil.pid_exists(child.pid) or _zombie(child), 60
    )


def _zombie(proc: Any) -> bool:
    with contextlib.suppress(psutil.Error):
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    return True


def test_driver_kill_then_resume_loses_and_repeats_nothing(cluster: str, tmp_path: Path) -> None:
    suite = _suite(tmp_path, "resume", steps=40, techniques="baseline", models="tiny, tiny2")  # 2 groups
    results = tmp_path / "r"
    cmd = _on(cluster, suite, results)
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _poll("a first record", lambda: _records(results) or None)
    driver.kill()
    driver.wait()
    kept = _records(results)  # durable when the driver died: one group, or both when they finished together
    run_dir = next(results.iterdir())
    resumed = subprocess.run([*cmd, "--resume", str(run_dir)], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    recs = _records(results)
    assert len(recs) == 2 and len({r["case_id"] for r in recs}) == 2  # nothing lost, nothing run twice
    assert recs[: len(kept)] == kept  # the finished records were kept, not re-run
    _poll("no case process left on any node", lambda: not _case_children(), 60)


def test_submitit_local_executor_runs_two_cases(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    suite = _suite(tmp_path, "slurm")
    done = subprocess.run(
        _harness(
            "run",
            str(suite),
            "--results",
            str(tmp_path / "r"),
            "--executor",
            "slurm",
            "--slurm",
            "cluster=local,timeout_min=20",
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    recs = _records(tmp_path / "r")
    assert sorted(r["case_name"] for r in recs) == ["tiny/train/baseline", "tiny/train/ckpt"]
    assert all(r["status"] == "ok" and r["node"]["host"] for r in recs)
    assert all((next((tmp_path / "r").iterdir()) / r["timeline_file"]).is_file() for r in recs)
