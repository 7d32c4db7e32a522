"""The fork server's own side (see runner/forkserver.py for the runner's): `python -m harness.runner.zygote
SOCK_FD RUNNER_PID PAD` imports what a case process imports, then forks one case process per request."""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from harness.runner.forkserver import MSG_MAX

# What child.run imports before the `imported` mark, in a memory pass (which imports torch._dynamo).
PRELOAD = (
    "torch",
    "torch._dynamo",
    "harness.case",
    "harness.runner.extras",
    "harness.runner.profile",
    "harness.runner.ranks",
    "harness.runner.session",
    "harness.runner.child",
)
PR_SET_PDEATHSIG = 1
MADV_POPULATE_READ = 22


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def serve(sock_fd: int, runner_pid: int) -> None:
    libc = _libc()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != runner_pid:  # the runner died before the prctl
        os._exit(3)
    sock = socket.socket(fileno=sock_fd)
    for name in PRELOAD:
        importlib.import_module(name)
    resident = _resident_file_ranges()
    import gc

    gc.collect()
    gc.freeze()  # what the imports made is shared with every child, not scanned again by the server
    why = _unforkable()
    if why:
        _send(sock, {"ready": False, "why": why})
        os._exit(3)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below through the wakeup fd
    _send(sock, {"ready": True, "pid": os.getpid()})
    children: set[int] = set()
    zygote = os.getpid()
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        for pid, rc in _reaped(children):
            _send(sock, {"exited": pid, "returncode": rc})
        if sock.fileno() in ready:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MSG_MAX, 8)
            except OSError:
                data, fds = b"", []
            if not data:
                os._exit(0)  # the runner closed its end (stop) or is gone: children die with us
            req = json.loads(data)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(wake_r)
                os.close(wake_w)
                _become_case(req, fds, sock, zygote, resident)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            _send(sock, {"id": req["id"], "started": pid})


def _unforkable() -> str | None:
    """Why this process must not be forked for a case: more than one thread (fork copies only the calling
    one), or CUDA's driver loaded (a forked child could not initialise CUDA again)."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        return f"the server has {threads} threads after its imports (fork needs 1)"
    if "libcuda.so" in Path("/proc/self/maps").read_text():
        return "CUDA's driver was loaded during the server's imports (a forked child could not use CUDA)"
    return None


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(msg).encode())
    except OSError:
        os._exit(0)


def _reaped(children: set[int]) -> list[tuple[int, int]]:
    out = []
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            out.append((pid, os.waitstatus_to_exitcode(status)))  # -N when killed by signal N, as Popen
    return out


def _become_case(
    req: dict[str, Any], fds: list[int], sock: socket.socket, zygote: int, resident: list[tuple[int, int]]
) -> None:
    """In the forked child: become the case process a spawn would have started, run it, never return."""
    code = 1
    try:
        sock.close()
        os.setsid()  # its own process group, as start_new_session gives a spawned one: a timeout kills it all
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # what a fresh python has
        libc = _libc()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote:
            os._exit(3)
        err, write_fd, read_fd = fds
        os.dup2(err, 1)
        os.dup2(err, 2)
        os.close(err)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        _populate(libc, resident)
        argv = [*req["argv"], str(write_fd), str(read_fd)]
        _set_cmdline([sys.executable, "-m", "harness.runner.child", *argv])
        from harness.runner import child

        sys.argv = [str(child.__file__), *argv]
        sys.orig_argv = [sys.executable, "-m", "harness.runner.child", *argv]
        code = child.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _resident_file_ranges() -> list[tuple[int, int]]:
    """The pages of readable file mappings this process has in its page tables (/proc/self/pagemap's
    present bit). fork() copies page tables only for mappings with anonymous pages, so a child does not
    have these: it would fault them in again during its build and steps, which a spawned case process
    had already done at import, and they would count above its post-import base. The child populates
    them before its `imported` mark (_populate)."""
    page = os.sysconf("SC_PAGE_SIZE")
    ranges: list[tuple[int, int]] = []
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        with open("/proc/self/pagemap", "rb") as pm:
            for line in maps:
                parts = line.split()
                if len(parts) < 6 or not parts[5].startswith("/") or parts[4] == "0" or "r" not in parts[1]:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                pm.seek(lo // page * 8)
                entries = memoryview(pm.read((hi - lo) // page * 8)).cast("Q")
                start = None
                for i, e in enumerate(entries):
                    if e >> 63 and start is None:
                        start = i
                    elif not e >> 63 and start is not None:
                        ranges.append((lo + start * page, (i - start) * page))
                        start = None
                if start is not None:
                    ranges.append((lo + start * page, (len(entries) - start) * page))
    except OSError:
        return []
    return ranges


def _populate(libc: Any, ranges: list[tuple[int, int]]) -> None:
    """Map the server's resident file pages into this child (page cache hits, no I/O)."""
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for addr, length in ranges:
        if madvise(addr, length, MADV_POPULATE_READ) != 0:  # before Linux 5.14: touch each page
            page = os.sysconf("SC_PAGE_SIZE")
            for a in range(addr, addr + length, page):
                ctypes.string_at(a, 1)


def _set_cmdline(args: list[str]) -> None:
    """Write `args` over this process's command line (/proc/self/cmdline shows the argument area, which
    the server padded for this); left as it is when the area is too small."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (stat fields 48, 49)
    except (OSError, ValueError, IndexError):
        return
    data = b"\0".join(a.encode() for a in args) + b"\0"
    if len(data) > end - start:
        return
    ctypes.memmove(start, data + b"\0" * (end - start - len(data)), end - start)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
