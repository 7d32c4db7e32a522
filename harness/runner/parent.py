"""Run one case process and measure it from outside: the parent side of the phase protocol.

The parent blocks on the child's control pipe (select with the time left until the case's deadline), so
it never busy-waits; a sampler thread records RSS (and NVML) for the timeline. At each phase mark it
reads VmHWM (the exact peak of the phase that just ended), resets it, and lets the child go on.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.case import CaseSpec
from harness.runner import forkserver, procmem
from harness.runner.sampler import Nvml, Sampler, Samples

# The phase each mark starts (the process starts in `startup`). After `measured`, the child runs untimed
# extras (breakdown, quality) before `done`: their own phase, kept out of the case's peak.
NEXT_PHASE = {"imported": "build", "built": "warmup", "warmed": "measured", "measured": "extras"}
PEAK_PHASES = ("build", "warmup", "measured")


@dataclass
class Phase:
    name: str
    t_start_s: float
    host_rss_start_bytes: int | None
    t_end_s: float = 0.0
    host_rss_peak_bytes: int | None = None
    host_rss_sampled_peak_bytes: int | None = None
    host_file_rss_drop_bytes: int | None = None
    gpu: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host_rss_start_bytes": self.host_rss_start_bytes,
            "host_rss_peak_bytes": self.host_rss_peak_bytes,
            "host_rss_sampled_peak_bytes": self.host_rss_sampled_peak_bytes,
            "host_file_rss_drop_bytes": self.host_file_rss_drop_bytes,
            "duration_s": round(self.t_end_s - self.t_start_s, 6),
            **self.gpu,
        }


@dataclass
class PassResult:
    """What one case process produced, as seen from both sides."""

    status: str  # ok / oom / timeout / error
    error: str | None
    child: dict[str, Any]
    phases: list[Phase]
    samples: Samples
    exit_code: int | None
    stderr_tail: str | None
    wall_time_s: float
    gpu_process_peak_bytes: int | None = None
    gpu_device_peak_bytes: int | None = None
    sample_interval_s: float = 0.0  # what the sampler was asked for (see sampler.achieved_interval)
    process_start: str = "spawn"  # fork_server / spawn (runner/forkserver.py)
    process_start_reason: str | None = None  # why spawn, where the fork server was not used


def child_env(case: CaseSpec, memory_pass: bool) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(case.threads)
    # PYTHONSAFEPATH: `python -m harness.runner.child` would otherwise put the user's working directory
    # first on sys.path, so a `harness/` folder there (a source checkout, anything) would be what the case
    # process runs instead of the installed package the parent runs.
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1", PYTHONSAFEPATH="1")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    env.pop("HARNESS_PROFILE", None)  # only a profile pass records (extra_env), never a measured one
    env.pop("HARNESS_EXTRAS", None)  # only the first timing pass runs the extras (extra_env)
    env["HARNESS_PASS"] = "memory" if memory_pass else "timing"
    if memory_pass and case.host_malloc_mmap_threshold_bytes is not None:
        # glibc keeps medium frees in its heap; with a low mmap threshold they go back to the OS, so RSS
        # tracks live tensors and one phase's leftovers cannot hide the next phase's peak.
        env["MALLOC_MMAP_THRESHOLD_"] = str(case.host_malloc_mmap_threshold_bytes)
    return env


def prestart_memory_server(case: CaseSpec) -> None:
    """Start the fork server a memory pass of `case` will use, without waiting for its imports."""
    forkserver.prestart(child_env(case, True), os.getcwd())


def run_pass(
    case: CaseSpec,
    work_dir: Path,
    memory_pass: bool,
    nvml: Nvml | None,
    deadline: float,
    extra_env: dict[str, str] | None = None,
) -> PassResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    tag = "memory" if memory_pass else "timing"
    case_file, out_file = work_dir / "case.json", work_dir / f"out-{tag}.json"
    case_file.write_text(case.model_dump_json(indent=1))
    out_file.unlink(missing_ok=True)
    stderr_path = work_dir / f"stderr-{tag}.txt"
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    oom_kills_before = procmem.oom_kill_count()
    t0 = time.monotonic()
    env = child_env(case, memory_pass) | (extra_env or {})  # extra_env: a profile pass
    with open(stderr_path, "wb") as err:
        proc, start, start_reason = _start(
            [str(case_file), str(out_file)], env, err, (from_child_w, to_child_r), deadline
        )
    os.close(from_child_w)
    os.close(to_child_r)
    if memory_pass and case.timing_pass and start == "fork_server":
        # The timing passes' server (glibc's default allocator) imports on another core meanwhile.
        forkserver.prestart(child_env(case, False), os.getcwd())
    interval = case.sample_interval_ms / 1000 if memory_pass else 0.02
    sampler = Sampler(proc.pid, interval, t0, nvml, case.memory_limit_bytes)
    sampler.start()
    phases: list[Phase] = []
    timed_out = False
    try:
        phases, timed_out = _follow(proc.pid, from_child_r, to_child_w, sampler, t0, deadline)
    finally:
        os.close(from_child_r)
        os.close(to_child_w)
        killed = _reap(proc, grace_s=0 if timed_out else 10)
        sampler.stop()
    oom = _oom_killed(oom_kills_before)
    result = _finish(
        proc.returncode, timed_out, killed, sampler, phases, out_file, stderr_path, time.monotonic() - t0, oom
    )
    result.sample_interval_s = interval
    result.process_start, result.process_start_reason = start, start_reason
    return result


def _start(
    files: list[str], env: dict[str, str], err: IO[bytes], pipes: tuple[int, int], deadline: float
) -> tuple[subprocess.Popen[bytes] | forkserver.CaseProcess, str, str | None]:
    """The case process, forked from the fork server (torch imported once per runner) or, where that
    cannot be used, spawned fresh; with which it was and why not the fork server."""
    try:
        ready_s = max(deadline - time.monotonic(), 1.0)
        proc = forkserver.start_case_process(files, env, os.getcwd(), [err.fileno(), *pipes], ready_s)
        return proc, "fork_server", None
    except forkserver.Unavailable as e:
        reason = str(e)
    argv = [sys.executable, "-m", "harness.runner.child", *files, *(str(fd) for fd in pipes)]
    popen = subprocess.Popen(
        argv,
        pass_fds=pipes,
        stdin=subprocess.DEVNULL,
        stdout=err,
        stderr=err,
        env=env,
        start_new_session=True,  # its own process group: a timeout kills it and all it started
    )
    return popen, "spawn", reason


def _oom_killed(before: int | None) -> bool | None:
    """Whether the kernel recorded an OOM kill while the case ran; None where it keeps no record."""
    after = procmem.oom_kill_count()
    return None if before is None or after is None else after > before


def _reap(proc: subprocess.Popen[bytes] | forkserver.CaseProcess, grace_s: float) -> bool:
    """Wait for the case process to exit; past the grace period (or on timeout) kill its whole group.
    Returns True when we killed it, so that our SIGKILL is not mistaken for the kernel's OOM killer."""
    try:
        proc.wait(timeout=grace_s)
        return False
    except subprocess.TimeoutExpired:
        procmem.kill_group(proc.pid)
        proc.wait()
        return True


def _follow(
    pid: int, rfd: int, wfd: int, sampler: Sampler, t0: float, deadline: float
) -> tuple[list[Phase], bool]:
    """Serve the child's phase marks until it finishes, dies, or runs past the deadline."""
    phases = [Phase("startup", 0.0, None)]
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return _close_open_phase(phases, pid, sampler, t0), True
        ready, _, _ = select.select([rfd], [], [], left)
        if not ready:
            continue
        chunk = os.read(rfd, 65536)
        if not chunk:  # the child exited (or died) without a final mark
            return _close_open_phase(phases, pid, sampler, t0), False
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            _on_mark(msg, phases, pid, sampler, t0)
            os.write(wfd, b"ok\n")
            if msg["mark"] == "done":
                return phases, False


def _on_mark(msg: dict[str, Any], phases: list[Phase], pid: int, sampler: Sampler, t0: float) -> None:
    current = phases[-1]
    current.t_end_s = time.monotonic() - t0
    current.gpu = {k: v for k, v in msg.items() if k.startswith("gpu_")}
    _close(current, pid, sampler)
    if msg["mark"] == "done":
        return
    procmem.reset_hwm(pid)
    nxt = NEXT_PHASE[msg["mark"]]
    if msg["mark"] == "imported":  # memory_limit_bytes counts from here: the imports are not the case's
        sampler.base_bytes = procmem.rss_bytes(pid)
    # The reset sets the high-water mark to the RSS of this instant: sample it too, so the sampled peak
    # of the new phase starts from the same point as the kernel's.
    phases.append(Phase(nxt, current.t_end_s, sampler.sample_now()))


def _close(phase: Phase, pid: int, sampler: Sampler) -> None:
    sampled, _gpu, phase.host_file_rss_drop_bytes = sampler.take_phase_max()
    phase.host_rss_sampled_peak_bytes = sampled or None
    hwm = procmem.hwm_bytes(pid)
    # Where the kernel gives no high-water mark, the sampled peak is the best figure (and says so).
    phase.host_rss_peak_bytes = hwm if hwm is not None else phase.host_rss_sampled_peak_bytes


def _close_open_phase(phases: list[Phase], pid: int, sampler: Sampler, t0: float) -> list[Phase]:
    phases[-1].t_end_s = time.monotonic() - t0
    _close(phases[-1], pid, sampler)
    return phases


def _finish(
    rc: int | None,
    timed_out: bool,
    killed: bool,
    sampler: Sampler,
    phases: list[Phase],
    out_file: Path,
    stderr_path: Path,
    wall: float,
    oom_killed: bool | None = None,
) -> PassResult:
    child: dict[str, Any] = json.loads(out_file.read_text()) if out_file.exists() else {}
    tail = _tail(stderr_path)
    s = sampler.samples
    gpu_proc = max(s.gpu_process_bytes) if s.gpu_process_bytes else None
    gpu_dev = max(s.gpu_device_bytes) if s.gpu_device_bytes else None
    _cap(stderr_path)
    status, error = _status(rc, timed_out, killed, sampler, child, tail, oom_killed)
    keep_tail = tail if status != "ok" else None
    return PassResult(status, error, child, phases, s, rc, keep_tail, wall, gpu_proc, gpu_dev)


def _status(
    rc: int | None,
    timed_out: bool,
    killed: bool,
    sampler: Sampler,
    child: dict[str, Any],
    tail: str,
    oom_killed: bool | None = None,
) -> tuple[str, str | None]:
    if timed_out:
        return "timeout", None  # the caller words it with the limit
    if sampler.killed_for_memory is not None:
        base = sampler.base_bytes or 0
        return (
            "oom",
            f"host RSS {sampler.killed_for_memory} bytes, {sampler.killed_for_memory - base} above the "
            f"post-import base {base}, exceeded memory_limit_bytes {sampler.limit}",
        )
    if child.get("status"):
        return str(child["status"]), child.get("error")
    if rc is not None and rc < 0 and not killed:
        return _signal_status(-rc, oom_killed)
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return "error", f"case process exited with code {rc} without a result: {last}"[:500]


def _signal_status(signum: int, oom_killed: bool | None) -> tuple[str, str]:
    """A signal we did not send. SIGKILL is the OOM killer's only when the kernel's own counter says so
    (cgroup memory.events / vmstat oom_kill); otherwise someone or something else killed the case."""
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
    if signum == signal.SIGKILL and oom_killed:
        return "oom", "killed by the kernel's OOM killer (its oom_kill counter rose during the case)"
    if signum == signal.SIGKILL and oom_killed is None:
        return (
            "error",
            "killed by signal 9 (SIGKILL) from outside; the kernel keeps no OOM record here to tell",
        )
    why = " (not the OOM killer)" if signum == signal.SIGKILL else f" ({name})"
    return "error", f"killed by signal {signum}{why} before it could report"


# A case's stderr as kept in its run folder: its head (where a warning first shows) and its tail (where
# the error is), not 20 MB of a model printing in a loop.
STDERR_KEEP_BYTES = 256 * 1024


def _cap(path: Path, keep: int = STDERR_KEEP_BYTES) -> None:
    try:
        size = path.stat().st_size
        if size <= 2 * keep:
            return
        with open(path, "rb") as f:
            head = f.read(keep)
            f.seek(size - keep)
            tail = f.read()
        cut = f"\n[harness: {size - 2 * keep} bytes of this stderr cut here]\n".encode()
        path.write_bytes(head + cut + tail)
    except OSError:
        return  # the file is the case's own output: never the reason a result is lost


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")
