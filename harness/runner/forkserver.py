"""Case processes forked from a server that has imported torch once (a "zygote"), instead of a fresh
`python -m harness.runner.child` per pass that imports torch, torch._dynamo, pydantic and harness again.

The runner starts the server lazily, on its first pass (`python -m harness.runner.zygote`, its own
session, SIGINT ignored, PR_SET_PDEATHSIG so it dies with the runner, stopped at runner exit). The server
imports what a case process imports before its `imported` mark (zygote.PRELOAD), never runs a torch op (no
thread pool, no CUDA), checks that it still has one thread, and then serves requests on a SEQPACKET
socketpair: the pass's argv, environment and cwd, and its stderr file and two control pipe ends as
SCM_RIGHTS. It forks; the child becomes what `python -m harness.runner.child ARGS` would be (own
session, stderr file on fds 1 and 2, the request's environment, cwd, default signal handlers, the same
command line) and runs child.main. The server is the child's real parent: it
reaps it and sends its exit status, which the runner's handle (CaseProcess) turns into a returncode as
Popen does. See docs/process-start.md for what this changes in the figures (nothing, by design).

Where the server cannot be used (HARNESS_FORK_SERVER=0, no fork/SEQPACKET/send_fds, the server failed to
start or is not single-threaded) the runner spawns the case process as before and says so in the record
(`process_start`, `process_start_reason`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ENV_SWITCH = "HARNESS_FORK_SERVER"
# Read by a case process only after it starts (the child replaces os.environ before it runs): a change in
# these does not need another server. Everything else in the environment may matter at import time
# (PYTHONPATH, sitecustomize switches, OMP_*/MKL_* read by the thread libraries when they load), so the
# server is keyed by the rest. That includes MALLOC_MMAP_THRESHOLD_, which glibc reads when malloc starts:
# a memory pass's server imports under the memory pass's allocator setting, as a spawned memory pass
# does, and leaves the same heap behind (a server that imported under glibc's default left 0.2-0.8 MiB
# more in the base and as much less above it; mallopt in the child cannot undo that).
PER_PASS_ENV = ("HARNESS_PASS", "HARNESS_EXTRAS", "HARNESS_PROFILE")
# Servers kept at once: one for memory passes, one for timing passes (least recently used goes first).
MAX_SERVERS = 2
# The server's command line is padded so that a forked child can write its own (the spawned one's,
# `python -m harness.runner.child CASE OUT W R`) over it: ps, psutil and the tests that look for case
# processes by their command line see the same thing either way.
CMDLINE_PAD = 8192
MSG_MAX = 1 << 20


# The runner's side is this module; the server's is runner/zygote.py (which imports the case process's
# modules: this one, imported by the runner's parent.py, must not).


class Unavailable(Exception):
    """The fork server cannot start this pass; the message says why (recorded as process_start_reason).
    `lasting`: a server for this environment will not do better next time (not single-threaded, failed
    its imports), so later passes spawn at once instead of paying its imports again."""

    def __init__(self, why: str, lasting: bool = False) -> None:
        super().__init__(why)
        self.lasting = lasting


class CaseProcess:
    """The Popen surface parent.run_pass uses (pid, wait, returncode) for a child of the fork server."""

    def __init__(self, server: _Server, pid: int) -> None:
        self._server, self.pid = server, pid
        self.returncode: int | None = None
        self.args = ["harness.runner.child (forked)", str(pid)]

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.wait_status(self.pid, timeout)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                return self.wait(0)
            except subprocess.TimeoutExpired:
                return None
        return self.returncode


class _Server:
    def __init__(self, key: tuple[str, ...], env: dict[str, str], cwd: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self._started: dict[int, int] = {}  # request id -> pid
        self._status: dict[int, int] = {}  # pid -> returncode
        self._in_flight: set[int] = set()
        self._next_id = 0
        self.dead = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self._log = tempfile.TemporaryFile(prefix="harness-forkserver-")  # noqa: SIM115 (the server's life)
        cmd = [sys.executable, "-m", "harness.runner.zygote", str(theirs.fileno()), str(os.getpid())]
        try:
            self.proc = subprocess.Popen(
                [*cmd, " " * CMDLINE_PAD],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                env=env,
                cwd=cwd,
                start_new_session=True,  # never in the terminal's group: Ctrl-C is the runner's to handle
            )
        except OSError as e:
            ours.close()
            self._log.close()
            raise Unavailable(f"fork server could not start: {e}") from e
        finally:
            theirs.close()
        self.ready = False
        self.last_used = time.monotonic()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server has done its imports (once); Unavailable if it cannot serve."""
        with self._lock:
            if not self.ready:
                self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        msg = self._recv(timeout_s)
        if msg is None or not msg.get("ready"):
            lasting = msg is not None or self.dead  # it refused, or died in its imports
            why = (msg or {}).get("why") or (
                f"exited: {self._log_tail()}" if self.dead else f"no answer within {timeout_s:.0f} s"
            )
            self.stop()
            raise Unavailable(f"fork server unusable: {why}"[:500], lasting)
        self.ready = True

    def _log_tail(self) -> str:
        try:
            self._log.seek(0)
            lines = self._log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else "(no output)"

    def alive(self) -> bool:
        return not self.dead and self.proc.poll() is None

    def _recv(self, timeout: float | None) -> dict[str, Any] | None:
        """One message, or None when none came within the timeout; marks the server dead at EOF."""
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return None
            data = self.sock.recv(MSG_MAX)
        except OSError:
            data = b""
        if not data:
            self.dead = True
            return None
        msg: dict[str, Any] = json.loads(data)
        return msg

    def _file(self, msg: dict[str, Any]) -> None:
        if "started" in msg:
            self._started[int(msg["id"])] = int(msg["started"])
        elif "exited" in msg:
            self._status[int(msg["exited"])] = int(msg["returncode"])

    def start(self, argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> CaseProcess:
        self.last_used = time.monotonic()
        with self._lock:
            req_id, self._next_id = self._next_id, self._next_id + 1
            payload = json.dumps({"id": req_id, "argv": argv, "env": env, "cwd": cwd}).encode()
            try:
                socket.send_fds(self.sock, [payload], fds)
            except OSError as e:
                self.dead = True
                raise Unavailable(f"fork server gone: {e}") from e
            while req_id not in self._started:
                msg = self._recv(60)
                if msg is None:
                    self.dead = True
                    raise Unavailable("fork server did not answer a start request within 60 s")
                self._file(msg)
            pid = self._started.pop(req_id)
            self._in_flight.add(pid)
            return CaseProcess(self, pid)

    def wait_status(self, pid: int, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if pid in self._status:
                    self._in_flight.discard(pid)
                    return self._status.pop(pid)
                if self.dead:
                    return self._orphaned_status(pid)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(["harness.runner.child", str(pid)], timeout or 0)
                msg = self._recv(0.1 if left is None else min(left, 0.1))  # slices: other waiters get turns
                if msg is not None:
                    self._file(msg)

    def _orphaned_status(self, pid: int) -> int:
        """The server died before it could report: its PR_SET_PDEATHSIG killed the child (if it still ran),
        so the child's end is a SIGKILL; wait until init has reaped it so that nothing is left."""
        self._in_flight.discard(pid)
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.01)
        return -int(signal.SIGKILL)

    def stop(self) -> None:
        """Close the socket (the server exits at EOF) and reap the server; SIGKILL it if it lingers."""
        self.dead = True
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


_servers: list[_Server] = []
_refused: dict[tuple[str, ...], str] = {}  # environments whose server could not serve, with the reason
_servers_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def unavailable_reason() -> str | None:
    """Why this platform cannot use a fork server at all; None where it can."""
    if not enabled():
        return f"{ENV_SWITCH}=0"
    if not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        return "fork server needs Linux (fork, SCM_RIGHTS)"
    return None


def server_key(env: dict[str, str], cwd: str) -> tuple[str, ...]:
    """What a server's imports depend on: the interpreter, the cwd, and the environment less PER_PASS_ENV."""
    kept = sorted(f"{k}={v}" for k, v in env.items() if k not in PER_PASS_ENV)
    return (sys.executable, cwd, *kept)


def start_case_process(
    argv: list[str], env: dict[str, str], cwd: str, fds: list[int], ready_timeout_s: float
) -> CaseProcess:
    """Fork a case process from the server for this environment (starting or replacing it as needed).
    Raises Unavailable with the reason when it cannot; the caller then spawns one."""
    why = unavailable_reason()
    if why:
        raise Unavailable(why)
    key = server_key(env, cwd)
    if key in _refused:  # a server for this environment could not serve: do not pay its imports again
        raise Unavailable(_refused[key])
    try:
        return _ready(env, cwd, ready_timeout_s).start(argv, env, cwd, fds)
    except Unavailable as e:
        if e.lasting or "unusable" in str(e):
            raise
        return _ready(env, cwd, ready_timeout_s).start(argv, env, cwd, fds)  # died since: replaced once


def _ready(env: dict[str, str], cwd: str, timeout_s: float) -> _Server:
    with _servers_lock:
        server = _current(env, cwd)
    try:
        server.wait_ready(timeout_s)
    except Unavailable as e:
        if e.lasting:
            _refused[server.key] = str(e)
        raise
    return server


def prestart(env: dict[str, str], cwd: str) -> None:
    """Start the server for `env` without waiting for it (its imports overlap the pass in progress)."""
    if unavailable_reason() is None:
        with _servers_lock:
            _current(env, cwd)


def _current(env: dict[str, str], cwd: str) -> _Server:
    key = server_key(env, cwd)
    for s in list(_servers):
        if not s.alive():
            s.stop()
            _servers.remove(s)
        elif s.key == key:
            return s
    idle = sorted((s for s in _servers if not s._in_flight), key=lambda s: s.last_used)
    while len(_servers) >= MAX_SERVERS and idle:  # a server with a case in flight is never stopped
        old = idle.pop(0)
        old.stop()
        _servers.remove(old)
    server = _Server(key, {k: v for k, v in env.items() if k not in PER_PASS_ENV}, cwd)
    _servers.append(server)
    return server


@atexit.register
def stop_all() -> None:
    """Stop every server (at runner exit; PR_SET_PDEATHSIG covers a runner that dies without atexit)."""
    with _servers_lock:
        while _servers:
            _servers.pop().stop()
