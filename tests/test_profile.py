"""`harness run --profile memray`: one more process per case; its flame graph linked from the record."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.runner.profile import (
    MEMRAY_CAPTURE,
    MEMRAY_FLAMEGRAPH,
    TORCH_SNAPSHOT,
    TORCH_TIMELINE,
    ChildProfile,
    profile_case,
    unavailable_reason,
)
from harness.suite.load import load_suite
from tests.conftest import run_cli

MiB = 2**20
Runs = dict[str, tuple[Path, dict[str, Any]]]

SUITE = """\
version: 1
defaults: {{warmup_steps: 1, measured_steps: 2, timing_pass: false, data: random, reference_steps: 0,
  breakdown: false, quality: false, timeout_s: 120, device: {device}}}
models:
  tiny: {{size: ci, n_layers: 1, d_model: 32, n_heads: 2, d_ff: 64, vocab_size: 256}}
workloads:
  train: {{kind: train, batch_size: 2, seq_len: 16}}
techniques:
  baseline: []
  zero1: [zero1]
matrix:
  model: [tiny]
  workload: [train]
  techniques: [{techniques}]
"""


def write(tmp: Path, device: str = "cpu", techniques: str = "baseline") -> Path:
    path = tmp / f"tiny-{device}-{techniques}.yaml"
    path.write_text(SUITE.format(device=device, techniques=techniques))
    return path


def run(suite: Path, results: Path, *extra: str) -> tuple[Path, dict[str, Any]]:
    proc = run_cli("run", str(suite), "--results", str(results), *extra)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    (record,) = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return run_dir, record


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The same tiny case run twice through the real CLI: with and without --profile memray."""
    tmp = tmp_path_factory.mktemp("profile")
    suite = write(tmp)
    return {
        "plain": run(suite, tmp / "plain"),
        "profiled": run(suite, tmp / "profiled", "--profile", "memray"),
    }


@pytest.mark.slow
def test_profile_writes_memray_flamegraph_linked_from_the_record(runs: Runs) -> None:
    run_dir, rec = runs["profiled"]
    case = f"cases/{rec['case_id']}"
    assert rec["status"] == "ok"
    assert rec["profile"] == "memray" and rec["profile_unavailable_reason"] is None
    assert rec["artifacts"] == {
        "memray_flamegraph": f"{case}/{MEMRAY_FLAMEGRAPH}",
        "memray_capture": f"{case}/{MEMRAY_CAPTURE}",
    }
    html = (run_dir / rec["artifacts"]["memray_flamegraph"]).read_text()
    assert len(html) > 50_000 and "memray - flamegraph report" in html
    # Native traces: the bytes are attributed to torch's C++ CPU allocator, not only to Python lines.
    assert "at::detail::empty_cpu" in html
    from memray import FileReader

    reader = FileReader(str(run_dir / rec["artifacts"]["memray_capture"]))
    assert reader.metadata.has_native_traces
    assert reader.metadata.total_allocations == rec["memray_total_allocations"] > 1000
    assert reader.metadata.peak_memory == rec["memray_peak_memory_bytes"] > 0
    reader.close()
    assert rec["memray_capture_bytes"] == (run_dir / case / MEMRAY_CAPTURE).stat().st_size
    # The profile pass keeps its own files apart: the memory pass's are the record's.
    assert (run_dir / case / "profile" / "out-timing.json").exists()


@pytest.mark.slow
def test_without_profile_no_artefact_is_written(runs: Runs) -> None:
    run_dir, rec = runs["plain"]
    assert not {"artifacts", "profile", "profile_unavailable_reason", "memray_capture_bytes"} & rec.keys()
    case_dir = run_dir / "cases" / rec["case_id"]
    left = {MEMRAY_CAPTURE, MEMRAY_FLAMEGRAPH, TORCH_SNAPSHOT, TORCH_TIMELINE, "profile"}
    assert not left & {p.name for p in case_dir.iterdir()}


@pytest.mark.slow
def test_profile_pass_leaves_the_measured_figures_alone(runs: Runs) -> None:
    plain, profiled = runs["plain"][1], runs["profiled"][1]
    assert plain["case_id"] == profiled["case_id"]
    for key in ("host_rss_base_bytes", "host_rss_peak_bytes", "host_rss_peak_above_base_bytes"):
        assert abs(plain[key] - profiled[key]) < MiB, key
    for phase in ("build", "warmup", "measured"):
        a, b = plain["phases"][phase], profiled["phases"][phase]
        assert abs(a["host_rss_peak_bytes"] - b["host_rss_peak_bytes"]) < MiB, phase
    assert plain["loss"] == profiled["loss"]  # the same steps ran in the measured pass


def test_failed_profile_pass_is_a_reason_not_a_failure(tmp_path: Path) -> None:
    (case,) = load_suite(write(tmp_path)).cases
    # A deadline no case process meets (importing torch alone takes longer): the pass times out.
    slow = case.model_copy(update={"timeout_s": 0.05})
    case_dir = tmp_path / "run" / "cases" / case.case_id
    out = profile_case(slow, case_dir, tmp_path / "run", None, "memray")
    assert str(out["profile_unavailable_reason"]).startswith("profile pass timeout")
    assert "artifacts" not in out
    assert not (case_dir / MEMRAY_FLAMEGRAPH).exists()


def test_unavailable_reasons(tmp_path: Path) -> None:
    (case,) = load_suite(write(tmp_path)).cases
    assert unavailable_reason(case, "memray") is None
    assert "unknown profiler 'perf'" in str(unavailable_reason(case, "perf"))
    (multi,) = load_suite(write(tmp_path, techniques="zero1")).cases
    assert "multi-rank" in str(unavailable_reason(multi, "memray"))


def test_child_profile_is_inert_without_the_environment_variable(tmp_path: Path) -> None:
    idle = ChildProfile(torch, on_cuda=False, env="")
    idle.start()
    idle.stop()
    assert idle.out_dir is None and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="expected one of memray"):
        ChildProfile(torch, on_cuda=False, env=f"perf:{tmp_path}")


def test_cli_refuses_an_unknown_profiler(tmp_path: Path) -> None:
    proc = run_cli("run", str(write(tmp_path)), "--results", str(tmp_path / "r"), "--profile", "perf")
    assert proc.returncode == 2 and "invalid choice: 'perf'" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU")
def test_cuda_profile_adds_torch_allocator_history(tmp_path: Path) -> None:
    run_dir, rec = run(write(tmp_path, device="cuda"), tmp_path / "res", "--profile", "memray")
    assert rec["status"] == "ok" and rec["profile_unavailable_reason"] is None
    case = f"cases/{rec['case_id']}"
    assert rec["artifacts"]["torch_memory_snapshot"] == f"{case}/{TORCH_SNAPSHOT}"
    assert rec["artifacts"]["torch_memory_timeline"] == f"{case}/{TORCH_TIMELINE}"
    with open(run_dir / case / TORCH_SNAPSHOT, "rb") as f:
        snapshot = pickle.load(f)
    events = [e for trace in snapshot["device_traces"] for e in trace]
    assert sum(e["action"] == "alloc" for e in events) > 10  # the steps' CUDA tensors were recorded
    assert "MemoryViz.js" in (run_dir / case / TORCH_TIMELINE).read_text()
    assert (run_dir / rec["artifacts"]["memray_flamegraph"]).stat().st_size > 50_000
