"""Timing on a shared machine: load figures around timing passes, the disturbed flag, the ratio interval,
and the order of a group's passes (interleaved, so drifting load hits every technique alike)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.executors import node
from harness.runner import hostload, suite_runner
from harness.runner.case_runner import CaseRun
from harness.suite.load import load_suite


def test_snapshot_reads_load_and_between_gives_rates():
    a = hostload.snapshot()
    sum(i * i for i in range(200_000))  # some CPU time passes
    time.sleep(0.05)  # and jiffies: /proc/stat counts in 10 ms ticks, and none elapsed is no rate (None)
    b = hostload.snapshot()
    out = hostload.between(a, b)
    assert out["wall_s"] >= 0 and out["cpu_count"] >= 1
    assert out["loadavg_1m_start"] >= 0
    if Path("/proc/pressure/cpu").exists():
        assert 0 <= out["cpu_pressure_some_fraction"] <= 1.005
    if Path("/proc/stat").exists():
        assert 0 <= out["cpu_steal_fraction"] <= 1


def test_between_computes_pressure_and_steal_from_counters():
    a = {"t": 0.0, "loadavg_1m": 1.0, "psi_cpu_some_total_us": 0, "steal_jiffies": 10, "total_jiffies": 100}
    b = {"t": 2.0, "loadavg_1m": 3.0, "psi_cpu_some_total_us": 500_000, "steal_jiffies": 20}
    b |= {"total_jiffies": 300, "cpu_count": 2}
    out = hostload.between(a, b)
    assert out["cpu_pressure_some_fraction"] == 0.25  # 0.5 s of waiting in 2 s
    assert out["cpu_steal_fraction"] == 0.05  # 10 of 200 jiffies
    assert (out["loadavg_1m_start"], out["loadavg_1m_end"]) == (1.0, 3.0)


def test_disturbed_when_wall_exceeds_cpu_beyond_the_bound():
    assert hostload.disturbed([1.0, 1.0, 1.0], [0.98, 0.99, 1.0]) == (False, None)
    flag, why = hostload.disturbed([1.3, 1.2, 1.25], [1.0, 1.0, 1.0])  # waited ~25 % for a core
    assert flag is True and "waited for a core" in str(why) and "1.25" in str(why)
    assert hostload.disturbed([1.0], [1.9]) == (False, None)  # two threads busy: CPU above wall is fine
    assert hostload.disturbed([], [1.0]) == (None, None)


def test_disturbed_when_other_work_ran_beside_the_pass_even_with_wall_equal_to_cpu():
    """A load in another session can leave the case its core (wall = CPU) yet slow its CPU time through
    the shared core, caches and memory bandwidth: the machine's CPU pressure says so."""
    steps = [1.0, 1.0, 1.0]
    assert hostload.disturbed(steps, steps, 0.007) == (False, None)  # a quiet pass here
    flag, why = hostload.disturbed(steps, steps, 0.52)  # busy loops in one session beside it
    assert flag is True and "CPU pressure 52%" in str(why)
    assert hostload.disturbed(steps, steps, None) == (False, None)  # no PSI: wall/CPU only


def test_ratio_interval_brackets_the_ratio_and_narrows_with_agreeing_steps():
    base = [1.0, 1.02, 0.98, 1.01, 0.99]
    tight = hostload.ratio_interval([2.0, 2.01, 1.99, 2.02, 1.98], base)
    loose = hostload.ratio_interval([1.0, 3.0, 2.0, 1.5, 2.5], base)
    assert tight is not None and loose is not None
    assert tight[1] <= tight[0] <= tight[2] and tight[0] == pytest.approx(2.0)
    assert tight[2] - tight[1] < loose[2] - loose[1]
    assert hostload.ratio_interval([1.0], []) is None


def test_time_ratio_fields_flag_a_ratio_when_either_side_was_disturbed():
    base = {"step_time_s": [1.0, 1.0], "step_cpu_time_s_median": 1.0, "step_time_disturbed": False}
    case = {"techniques": ["x"], "step_time_s": [1.5, 1.5], "step_cpu_time_s_median": 1.2}
    quiet = suite_runner.time_ratio_fields({**case, "step_time_disturbed": False}, base)
    assert quiet["step_time_vs_baseline_ratio"] == 1.5
    assert quiet["step_cpu_time_vs_baseline_ratio"] == 1.2
    assert quiet["step_time_vs_baseline_disturbed"] is False
    noisy_base = {**base, "step_time_disturbed": True}
    assert suite_runner.time_ratio_fields({**case, "step_time_disturbed": False}, noisy_base)[
        "step_time_vs_baseline_disturbed"
    ]


SUITE = """\
version: 1
defaults: {repeats: 2}
models:
  m: {size: ci}
workloads:
  train: {kind: train, batch_size: 2, seq_len: 16}
techniques:
  baseline: []
  ckpt: [activation_checkpointing]
  sdpa: [sdpa_attention]
matrix: {model: [m], workload: [train], techniques: [sdpa, ckpt, baseline]}
"""


class _Pass:
    def __init__(self) -> None:
        self.status, self.error = "ok", None
        self.child: dict[str, Any] = {}


def test_group_runs_memory_passes_then_interleaved_timing_passes(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    order: list[str] = []

    def memory_pass(case: Any, run_dir: Path, nvml: Any) -> CaseRun:
        order.append(f"{case.techniques_name}:memory")
        return CaseRun(case, run_dir, "t", 0.0, _Pass())  # type: ignore[arg-type]

    def timing_pass(cr: CaseRun, nvml: Any) -> None:
        order.append(f"{cr.case.techniques_name}:timing")
        cr.timing.append(_Pass())  # type: ignore[arg-type]

    def finish_case(cr: CaseRun, *args: Any) -> dict[str, Any]:
        return {"case_id": cr.case.case_id, "spec": cr.case.model_dump(mode="json"), "techniques": []}

    # The group runs where the executor sends it: the node side (the local executor's too).
    monkeypatch.setattr(node, "memory_pass", memory_pass)
    monkeypatch.setattr(node, "timing_pass", timing_pass)
    monkeypatch.setattr(node, "finish_case", finish_case)
    monkeypatch.setattr(node, "prepare_reference", lambda case: None)
    monkeypatch.setattr(node, "unsupported_reason", lambda case, env: None)
    suite_runner.run_suite(suite, tmp_path / "results")
    assert order == [
        "baseline:memory",
        "sdpa:memory",
        "ckpt:memory",
        *["baseline:timing", "sdpa:timing", "ckpt:timing"] * 2,
    ]


SHORT = """\
version: 1
defaults: {warmup_steps: 4, measured_steps: 8, quality: false, reference_steps: 0, data: random}
models:
  m: {size: ci, n_layers: 2}
workloads:
  train: {kind: train, batch_size: 2, seq_len: 64}
techniques:
  baseline: []
matrix: {model: [m], workload: [train], techniques: [baseline]}
"""


@pytest.mark.slow
def test_short_memory_pass_keeps_the_peaks_and_the_timing_pass_the_losses(tmp_path):
    from harness.runner.case_runner import run_case

    path = tmp_path / "s.yaml"
    path.write_text(SHORT)
    (case,) = load_suite(path).cases
    short = run_case(case, tmp_path / "a", "a", None)
    full = run_case(case.model_copy(update={"timing_pass": False}), tmp_path / "b", "b", None)
    assert short["status"] == full["status"] == "ok"
    assert short["memory_pass_measured_step_count"] < 8  # it stopped once the peak repeated
    assert "memory_pass_measured_step_count" not in full
    assert short["loss"] == full["loss"] and len(short["loss"]) == 12  # every step, from the timing pass
    assert short["breakdown"]["tensor_peak_bytes"] == full["breakdown"]["tensor_peak_bytes"]
    for phase in ("warmup", "measured"):
        a, b = (r["phases"][phase]["host_rss_peak_bytes"] for r in (short, full))
        assert abs(a - b) <= 512 * 1024, phase  # host figures reproduce to 0.5 MiB
