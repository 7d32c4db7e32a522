"""Case processes forked from the fork server (runner/forkserver.py): the same case process as a spawned
one, a stated fallback where the server cannot be used, and no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.runner import forkserver
from harness.runner.parent import run_pass
from harness.suite.load import load_suite
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(forkserver.unavailable_reason() is not None, reason="no fork server here"),
]

SUITE = """\
version: 1
defaults: {{warmup_steps: 0, measured_steps: {steps}, timing_pass: false, timeout_s: 300}}
models:
  tiny: {{size: ci, n_layers: 1, d_model: 32, n_heads: 2, d_ff: 64}}
workloads:
  infer: {{kind: infer, batch_size: 1, seq_len: 8}}
techniques:
  baseline: []
matrix: {{model: [tiny], workload: [infer], techniques: [baseline]}}
"""


@pytest.fixture(autouse=True)
def _no_servers():
    """Each test starts with no server (and no refused environment) and leaves none behind."""
    forkserver.stop_all()
    forkserver._refused.clear()
    yield
    forkserver.stop_all()
    forkserver._refused.clear()


def _case(tmp_path: Path, steps: int = 1):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE.format(steps=steps)))
    return load_suite(path).cases[0]


def _pass(case, work: Path):
    return run_pass(case, work, True, None, time.monotonic() + 300)


def _server_pids() -> list[int]:
    return [s.proc.pid for s in forkserver._servers if s.alive()]


def test_a_pass_is_forked_from_one_server_reused_by_the_next(tmp_path):
    case = _case(tmp_path)
    first = _pass(case, tmp_path / "a")
    servers = _server_pids()
    second = _pass(case, tmp_path / "b")
    assert (first.status, second.status) == ("ok", "ok"), (first.error, second.error)
    assert (first.process_start, second.process_start) == ("fork_server", "fork_server")
    assert first.process_start_reason is None
    assert len(servers) == 1 and _server_pids() == servers
    # The case process's own figures are there as from a spawned one.
    assert [p.name for p in second.phases] == ["startup", "build", "warmup", "measured", "extras"]
    assert second.child["step_time_s"] and second.exit_code == 0


def test_switch_off_spawns_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv(forkserver.ENV_SWITCH, "0")
    result = _pass(_case(tmp_path), tmp_path / "a")
    assert result.status == "ok" and result.process_start == "spawn"
    assert result.process_start_reason == "HARNESS_FORK_SERVER=0"


def test_an_import_time_environment_change_gets_its_own_server(tmp_path, monkeypatch):
    case = _case(tmp_path)
    assert _pass(case, tmp_path / "a").status == "ok"
    (first,) = _server_pids()
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    result = _pass(case, tmp_path / "b")
    assert result.status == "ok" and result.process_start == "fork_server"
    (second,) = set(_server_pids()) - {first}
    # A third environment: the least recently used server is stopped, so idle servers never pile up.
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{tmp_path}")
    assert _pass(case, tmp_path / "c").status == "ok"
    assert len(_server_pids()) == forkserver.MAX_SERVERS and first not in _server_pids()
    assert second in _server_pids() and not _pid_running(first)


def test_a_killed_server_is_replaced_on_next_use(tmp_path):
    case = _case(tmp_path)
    assert _pass(case, tmp_path / "a").status == "ok"
    (old,) = _server_pids()
    os.kill(old, signal.SIGKILL)
    result = _pass(case, tmp_path / "b")
    assert result.status == "ok" and result.process_start == "fork_server"
    assert _server_pids() and old not in _server_pids()


def test_a_server_with_threads_is_refused_and_the_case_spawned(tmp_path, monkeypatch):
    # A sitecustomize that starts a thread in the server (as a library could at import): fork would copy
    # one thread of a multi-threaded process, so the runner must not use it.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, threading, time\n"
        "if 'harness.runner.zygote' in ' '.join(sys.orig_argv):\n"
        "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    result = _pass(_case(tmp_path), tmp_path / "a")
    assert result.status == "ok" and result.process_start == "spawn"
    assert "threads after its imports" in (result.process_start_reason or "")
    again = _pass(_case(tmp_path), tmp_path / "b")  # not tried again: its imports would be paid for nothing
    assert again.process_start == "spawn" and again.process_start_reason == result.process_start_reason
    assert not _server_pids()


def test_a_forked_case_has_the_command_line_of_a_spawned_one(tmp_path):
    case = _case(tmp_path, steps=100000)
    seen: list[str] = []

    def look() -> None:
        deadline = time.monotonic() + 300
        while not seen and time.monotonic() < deadline:
            for p in psutil.Process().children(recursive=True):
                cmd = " ".join(x for x in p.cmdline() if x)
                if "harness.runner.child" in cmd and str(tmp_path) in cmd:
                    seen.append(cmd)
                    os.killpg(p.pid, signal.SIGKILL)  # the whole case group, as a timeout would
            time.sleep(0.05)

    import threading

    t = threading.Thread(target=look)
    t.start()
    result = _pass(case, tmp_path / "a")
    t.join()
    assert seen and seen[0].split()[1:3] == ["-m", "harness.runner.child"]
    assert result.process_start == "fork_server" and result.exit_code == -signal.SIGKILL
    assert result.status == "error" and "killed by signal 9" in (result.error or "")


RUNNER = """\
import sys, time
from harness.suite.load import load_suite
from harness.runner.parent import run_pass
case = load_suite(sys.argv[1]).cases[0]
run_pass(case, __import__('pathlib').Path(sys.argv[2]), True, None, time.monotonic() + 600)
"""


def test_killing_the_runner_leaves_neither_server_nor_case(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SUITE.format(steps=100000)))
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path / "s.yaml"), str(tmp_path / "case")], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 300
        procs: list[psutil.Process] = []
        while len(procs) < 2 and time.monotonic() < deadline:
            procs = psutil.Process(runner.pid).children(recursive=True)
            time.sleep(0.1)
        cmds = [" ".join(p.cmdline()) for p in procs]
        assert any("harness.runner.zygote" in c for c in cmds), cmds
        assert any("harness.runner.child" in c for c in cmds), cmds
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 60
        while any(_running(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p.pid for p in procs if _running(p)]
    finally:
        runner.kill()


def _pid_running(pid: int) -> bool:
    try:
        return _running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def _running(p: psutil.Process) -> bool:  # a zombie is not running
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
