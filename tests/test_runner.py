"""The runner end to end: the real CLI in a subprocess, real case processes, failures as results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

TINY = """\
version: 1
defaults: {{warmup_steps: 1, measured_steps: 2, timing_pass: false, timeout_s: {timeout}{extra}}}
models:
  tiny: {{size: ci, n_layers: 2, d_model: 64, n_heads: 2, d_ff: 128}}
workloads:
  train: {{kind: train, batch_size: 2, seq_len: 32}}
  big: {{kind: train, batch_size: 64, seq_len: 512}}
  slow: {{kind: train, batch_size: 2, seq_len: 32}}
techniques:
  baseline: []
  ckpt: [activation_checkpointing]
  sdpa: [sdpa_attention]
  fp16: [{{autocast: {{dtype: float16}}}}]
matrix:
  model: [tiny]
  workload: [{workloads}]
  techniques: [{techniques}]
"""


def tiny_suite(
    write_suite, workloads="train", techniques="baseline, ckpt, sdpa", timeout=120, extra="", name="s.yaml"
):
    return write_suite(
        TINY.format(workloads=workloads, techniques=techniques, timeout=timeout, extra=extra), name
    )


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def run_dir_of(results: Path) -> Path:
    (d,) = [p for p in results.iterdir() if p.is_dir()]
    return d


def no_case_process_left(marker: str) -> bool:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "harness.runner.child" in cmd and marker in cmd:
            return False
    return True


def test_run_writes_manifest_records_and_timelines(write_suite, tmp_path):
    suite = tiny_suite(write_suite, techniques="baseline, fp16")
    proc = run_cli("run", str(suite), "--results", str(tmp_path / "res"))
    assert proc.returncode == 0, proc.stderr
    run = run_dir_of(tmp_path / "res")
    manifest = json.loads((run / "manifest.json").read_text())
    for key in (
        "suite_sha256",
        "git_commit",
        "git_dirty",
        "torch_version",
        "python_version",
        "cpu_model",
        "host",
        "started_at",
        "ended_at",
        "gpu_names",
        "gpu_driver_version",
    ):
        assert key in manifest
    assert manifest["ended_at"] is not None
    by = {r["techniques_name"]: r for r in records(run)}
    ok = by["baseline"]
    assert ok["status"] == "ok"
    assert len(ok["step_time_s"]) == 2 and len(ok["loss"]) == 3 and len(ok["step_cpu_time_s"]) == 2
    assert ok["host_rss_peak_above_base_bytes"] == ok["host_rss_peak_bytes"] - ok["host_rss_base_bytes"] > 0
    assert set(ok["phases"]) >= {"startup", "build", "warmup", "measured"}
    assert ok["param_bytes"] == 4 * ok["param_count"] and ok["trainable_param_count"] == ok["param_count"]
    assert ok["tokens_per_s"] == pytest.approx(64 / ok["step_time_s_median"])
    assert ok["threads"] == 1
    assert ok["gpu_peak_allocated_bytes"] is None and ok["gpu_unavailable_reason"]
    timeline = json.loads((run / ok["timeline_file"]).read_text())
    assert len(timeline["t_s"]) == len(timeline["host_rss_bytes"]) > 10
    assert [p["name"] for p in timeline["phases"]][:4] == ["startup", "build", "warmup", "measured"]
    # fp16 autocast has no meaning on a CPU: unsupported with its reason, not a failure.
    assert by["fp16"]["status"] == "unsupported" and "CUDA" in by["fp16"]["error"]
    assert "tiny / train" in proc.stdout and "results:" in proc.stdout


def test_results_load_into_pandas_with_one_call(write_suite, tmp_path):
    from harness.results import load_results

    suite = tiny_suite(write_suite, techniques="baseline")
    assert run_cli("run", str(suite), "--results", str(tmp_path / "res")).returncode == 0
    df = load_results(run_dir_of(tmp_path / "res"))
    assert len(df) == 1 and df["status"].iloc[0] == "ok"
    assert "phases.measured.host_rss_peak_bytes" in df.columns


def test_timeout_is_a_result_and_leaves_no_process(write_suite, tmp_path):
    # The first block measures 100000 steps under a 3 s limit; the second block's case must still run.
    text = TINY.format(workloads="slow", techniques="baseline", timeout=120, extra="")
    text = text.replace("matrix:\n", "matrix:\n- defaults: {measured_steps: 100000, timeout_s: 3}\n")
    text += "- {model: [tiny], workload: [train], techniques: [ckpt]}\n"
    suite = write_suite(text, "timeout.yaml")
    proc = run_cli("run", str(suite), "--results", str(tmp_path / "res"))
    assert proc.returncode == 1, proc.stderr
    by = {r["workload_name"]: r for r in records(run_dir_of(tmp_path / "res"))}
    assert by["slow"]["status"] == "timeout" and "timeout_s 3" in by["slow"]["error"]
    assert by["train"]["status"] == "ok"
    assert no_case_process_left(str(tmp_path))


def test_memory_limit_is_recorded_as_oom_and_the_suite_goes_on(write_suite, tmp_path):
    # 'big' keeps ~2 GiB of activations; the limit is 600 MB of RSS. 'train' fits and runs after it.
    suite = tiny_suite(
        write_suite, workloads="big, train", techniques="baseline", extra=", memory_limit_bytes: 600000000"
    )
    proc = run_cli("run", str(suite), "--results", str(tmp_path / "res"))
    assert proc.returncode == 1
    by = {r["workload_name"]: r for r in records(run_dir_of(tmp_path / "res"))}
    assert by["big"]["status"] == "oom" and "memory_limit_bytes 600000000" in by["big"]["error"]
    # The killed process's exit unmaps its pages: that is no memory pressure from other work.
    assert by["big"]["host_memory_disturbed"] is None and by["big"]["host_memory_disturbed_reason"] is None
    assert by["train"]["status"] == "ok" and by["train"]["host_memory_disturbed"] is False
    assert no_case_process_left(str(tmp_path))


def test_kill_minus_9_then_resume_loses_and_repeats_nothing(write_suite, tmp_path):
    suite = tiny_suite(write_suite, techniques="baseline, ckpt, sdpa")
    res = tmp_path / "res"
    runner = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(suite), "--results", str(res)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dirs = [p for p in res.glob("*/results.jsonl")] if res.exists() else []
        if dirs and dirs[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    run = run_dir_of(res)
    before = records(run)
    assert 1 <= len(before) < 3
    time.sleep(1)
    assert no_case_process_left(str(tmp_path))  # the case process died with its runner
    proc = run_cli("run", str(suite), "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    after = records(run)
    assert sorted(r["case_id"] for r in after) == sorted({r["case_id"] for r in after})  # none twice
    assert len(after) == 3
    assert after[: len(before)] == before  # finished cases untouched, not re-run


def test_resume_of_something_that_is_not_a_run(write_suite, tmp_path):
    suite = tiny_suite(write_suite)
    proc = run_cli("run", str(suite), "--resume", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a run directory" in proc.stderr
    gone = run_cli("run", str(suite), "--resume", str(tmp_path / "no-such-run"))
    assert gone.returncode == 2 and "no-such-run: does not exist" in gone.stderr


def test_crash_is_an_error_result_with_exit_code_and_stderr(write_suite, tmp_path, monkeypatch):
    # A technique module that raises inside the case process: the case is `error`, the runner goes on.
    suite = tiny_suite(write_suite, techniques="baseline")
    monkeypatch.setenv("HARNESS_TEST_CRASH", "1")
    crash = tmp_path / "sitecustomize.py"
    crash.write_text(
        "import os, sys\n"
        "argv = ' '.join(sys.orig_argv)\n"
        # a case process, or the fork server that case processes are forked from (runner/zygote.py)
        "if os.environ.get('HARNESS_TEST_CRASH') and ('harness.runner.child' in argv\n"
        "                                             or 'harness.runner.zygote' in argv):\n"
        "    import harness.workloads.train as t\n"
        "    def boom(self, i): raise RuntimeError('boom in step')\n"
        "    t.TrainSession.step = boom\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    proc = run_cli("run", str(suite), "--results", str(tmp_path / "res"))
    assert proc.returncode == 1
    (rec,) = records(run_dir_of(tmp_path / "res"))
    assert rec["status"] == "error" and "boom in step" in rec["error"]
    assert "RuntimeError" in rec["traceback_tail"]


def test_a_harness_folder_in_the_working_directory_is_not_what_the_case_runs(write_suite, tmp_path):
    # The console script (as users run it) from a directory holding an unrelated `harness/` package.
    script = Path(sys.executable).parent / "harness"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    bogus = tmp_path / "cwd" / "harness"
    (bogus / "runner").mkdir(parents=True)
    (bogus / "__init__.py").write_text("raise ImportError('the bogus harness package was imported')\n")
    (bogus / "runner" / "__init__.py").write_text("")
    suite = tiny_suite(write_suite, techniques="baseline")
    proc = subprocess.run(
        [str(script), "run", str(suite), "--results", str(tmp_path / "res")],
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = records(run_dir_of(tmp_path / "res"))
    assert rec["status"] == "ok"


def test_a_case_s_stderr_is_kept_as_its_head_and_tail(tmp_path):
    """20 MB of a model printing in a loop would be kept whole in the run folder: the first and last
    256 KiB stay (the first warning, the error), with a line saying how much was cut."""
    from harness.runner.parent import STDERR_KEEP_BYTES, _cap

    path = tmp_path / "stderr-memory.txt"
    body = b"first warning\n" + b"x" * (5 * 2**20) + b"\nRuntimeError: the error\n"
    path.write_bytes(body)
    _cap(path)
    kept = path.read_bytes()
    assert kept.startswith(b"first warning\n") and kept.endswith(b"RuntimeError: the error\n")
    cut = len(body) - 2 * STDERR_KEEP_BYTES
    assert f"[harness: {cut} bytes of this stderr cut here]".encode() in kept
    assert len(kept) < 2 * STDERR_KEEP_BYTES + 100
    small = tmp_path / "small.txt"
    small.write_bytes(b"a warning\n")
    _cap(small)
    assert small.read_bytes() == b"a warning\n"
