"""Honest diagnosis: an outside SIGKILL is not called OOM unless the kernel recorded one; the memory limit
counts from the post-import base; SIGTERM/SIGHUP stop a run as Ctrl-C does, with the real resume command;
a case that crashes in setup is that case's `error`, and the suite goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.runner import parent, procmem, signals
from harness.runner.sampler import Sampler
from tests.conftest import ROOT

QUICK = """\
version: 1
name: diag
defaults: {warmup_steps: 1, measured_steps: 1, quality: false, breakdown: false, timing_pass: false,
           reference_steps: 2}
models:
  tiny: {size: ci}
workloads:
  train: {kind: train, batch_size: 2, seq_len: 16}
  infer: {kind: infer, batch_size: 2, seq_len: 16}
techniques:
  base: []
"""
ONE = "matrix: {model: [tiny], workload: [train], techniques: [base]}\n"


def killed_process(sig: int) -> int:
    """The return code of a real process killed from outside by `sig`."""
    proc = subprocess.Popen(["sleep", "30"])
    proc.send_signal(sig)
    return proc.wait()


def status(rc: int, oom_killed: bool | None) -> tuple[str, str | None]:
    sampler = Sampler(os.getpid(), 1.0, 0.0, None, None)  # not started: only its verdict fields are read
    return parent._status(rc, False, False, sampler, {}, "", oom_killed)


def test_an_outside_sigkill_is_not_called_oom():
    got = status(killed_process(signal.SIGKILL), oom_killed=False)
    assert got == ("error", "killed by signal 9 (not the OOM killer) before it could report")


def test_a_sigkill_with_the_kernels_oom_record_is_oom():
    got = status(killed_process(signal.SIGKILL), oom_killed=True)
    assert got[0] == "oom" and "OOM killer" in str(got[1])


def test_a_sigkill_where_the_kernel_keeps_no_record_says_so():
    st, why = status(killed_process(signal.SIGKILL), oom_killed=None)
    assert st == "error" and "no OOM record" in str(why)


def test_other_signals_are_named():
    assert status(killed_process(signal.SIGTERM), oom_killed=False) == (
        "error",
        "killed by signal 15 (SIGTERM) before it could report",
    )


def test_no_oom_kill_recorded_while_nothing_ran_out_of_memory():
    before = procmem.oom_kill_count()
    killed_process(signal.SIGKILL)
    assert parent._oom_killed(before) in (False, None)  # None only where the kernel keeps no counter


def test_the_memory_limit_counts_from_the_post_import_base():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)  # its own group, as a case's is
    try:
        # Until it has exec'd, the child is a fork of this (large) test process: its RSS is not sleep's.
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        for _ in range(500):
            if cmdline.read_bytes().startswith(b"sleep"):
                break
            time.sleep(0.01)
        # Just after exec the loader is still mapping libraries: sleep's RSS grows for a moment
        # (CI saw 188 KiB against an earlier reading), so the margins below are MiB, not pages.
        rss = procmem.rss_bytes(proc.pid)
        assert rss is not None
        sampler = Sampler(proc.pid, 1.0, 0.0, None, memory_limit_bytes=1024)
        sampler.sample_now()  # RSS far above 1 KiB, but the imports are not done: not killed
        assert sampler.killed_for_memory is None and proc.poll() is None
        sampler.base_bytes = rss + 64 * 1024 * 1024  # base far above the RSS: nothing of the case's own
        sampler.sample_now()
        assert sampler.killed_for_memory is None and proc.poll() is None
        sampler.base_bytes = rss - 16 * 1024 * 1024  # 16 MiB of the case's own: past the 1 KiB limit
        sampler.sample_now()
        assert sampler.killed_for_memory is not None
        assert proc.wait(timeout=10) == -signal.SIGKILL
        st, why = parent._status(-9, False, False, sampler, {}, "", False)
        assert st == "oom" and "above the post-import base" in str(why)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_become_interrupts_with_their_own_exit_code(sig, tmp_path):
    with pytest.raises(KeyboardInterrupt) as err, signals.as_interrupts():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises before this ends
    assert signals.exit_code(err.value) == 128 + sig
    message = signals.stopped_message(err.value, Path("suites/x.yaml"), tmp_path / "run-1")
    assert f"stopped by {signal.Signals(sig).name}" in message
    assert f"harness run suites/x.yaml --resume {tmp_path / 'run-1'}" in message
    assert signal.getsignal(sig) is not signals._raise  # the old handler is back


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_case_that_crashes_in_parent_side_setup_is_an_error_and_the_suite_goes_on(tmp_path):
    from harness.runner.suite_runner import run_suite
    from harness.suite.load import load_suite

    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc")  # a real file, far too short to train reference weights on
    suite = write(tmp_path, QUICK + f"""\
matrix:
  - {{model: [tiny], workload: [infer], techniques: [base], defaults: {{corpus_text_file: "{tiny}"}}}}
  - {{model: [tiny], workload: [train], techniques: [base], defaults: {{data: random}}}}
""")  # fmt: skip
    outcome = run_suite(load_suite(suite), tmp_path / "results")
    by_kind = {r["workload_kind"]: r for r in outcome.records}
    assert by_kind["infer"]["status"] == "error"
    assert "setup failed while preparing reference weights and corpus" in by_kind["infer"]["error"]
    assert "bytes" in by_kind["infer"]["error"]  # the cause: the corpus is too short
    assert by_kind["train"]["status"] == "ok"


def _child_pids() -> list[int]:
    me = psutil.Process()
    return [p.pid for p in me.children(recursive=True) if "harness.runner.child" in " ".join(p.cmdline())]


def test_a_case_process_killed_from_outside_is_recorded_as_such(tmp_path):
    from harness.runner.case_runner import run_case
    from harness.suite.load import load_suite

    suite = load_suite(write(tmp_path, QUICK + ONE))
    case = suite.cases[0].model_copy(update={"measured_steps": 10_000, "data": "random"})
    records: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: records.append(run_case(case, tmp_path, "r", None)))
    runner.start()
    deadline = time.monotonic() + 300
    while not _child_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for pid in _child_pids():
        os.kill(pid, signal.SIGKILL)
    runner.join(timeout=300)
    record = records[0]
    assert record["status"] == "error", record["error"]
    assert "killed by signal 9 (not the OOM killer)" in record["error"]


def test_sigterm_stops_a_run_with_the_real_resume_command(tmp_path):
    suite = write(tmp_path, QUICK + ONE)
    suite.write_text(suite.read_text().replace("measured_steps: 1", "measured_steps: 100000")
                     .replace("warmup_steps: 1,", "warmup_steps: 1, data: random,"))  # fmt: skip
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--results", str(results)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(results.glob("*/cases/*/case.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        run_dir = next(results.iterdir())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"--resume {run_dir}" in err.replace("\n", "")
    assert "Traceback" not in err
    assert not _orphans(run_dir)


def _orphans(run_dir: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if str(run_dir) in " ".join(p.info["cmdline"] or [])]  # fmt: skip


def _importing_torch(pid: int) -> bool:
    try:
        return "torch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the imports")
def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    suite = write(tmp_path, QUICK + ONE)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--results", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not _importing_torch(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # torch's libraries are being loaded: start-up, no run yet
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
