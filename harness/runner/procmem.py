"""Host memory of another process, read from the kernel (see docs/measurement.md).

VmHWM is the kernel's exact resident high-water mark; writing "5" to /proc/<pid>/clear_refs resets it to
the current RSS, which is how the parent gets an exact peak per phase. `ru_maxrss` is not used: for a
child of a big parent it reports the parent's peak.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import psutil

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
HAVE_PROC = sys.platform.startswith("linux") and Path("/proc/self/status").exists()


def _status_kib(pid: int, key: bytes) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_bytes(pid: int) -> int | None:
    """Current resident set size; None once the process is gone."""
    if HAVE_PROC:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * PAGE_SIZE
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def rss_and_file_bytes(pid: int) -> tuple[int, int] | None:
    """(resident set size, its file-backed and shared part: statm's `shared`, RssFile + RssShmem); None
    once the process is gone or where /proc is absent. The file-backed part is library code and mapped
    files: pages the kernel may drop under memory pressure and read back later, which moves RSS without
    the process allocating or freeing anything."""
    if not HAVE_PROC:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * PAGE_SIZE, int(fields[2]) * PAGE_SIZE
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def hwm_bytes(pid: int) -> int | None:
    """The kernel's resident high-water mark since the process start or the last reset (Linux only)."""
    kib = _status_kib(pid, b"VmHWM:") if HAVE_PROC else None
    return None if kib is None else kib * 1024


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (the case process and everything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not offer it."""
    if not HAVE_PROC:
        return False
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def oom_kill_count() -> int | None:
    """The kernel's own count of OOM kills that could have hit our case process: this cgroup's
    memory.events `oom_kill` (cgroup v2) plus the system-wide /proc/vmstat `oom_kill`. None where the
    kernel offers neither. A delta across a case tells an OOM kill from any other SIGKILL."""
    counts = [c for c in (_cgroup_oom_kills(), _vmstat_oom_kills()) if c is not None]
    return sum(counts) if counts else None


def _read_counter(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _memory_cgroup_dirs() -> list[tuple[int, Path]]:
    """Our memory cgroup's directory candidates, (cgroup version, path), the named path first: the mount
    may show our own cgroup at its root inside a container, so the root is tried after it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    root = Path("/sys/fs/cgroup")
    out: list[tuple[int, Path]] = []
    for line in lines:
        _, controllers, rel = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        rel = rel.lstrip("/")
        if controllers == "":
            out += [(2, root / rel), (2, root)]
        if "memory" in controllers.split(","):
            out += [(1, root / "memory" / rel), (1, root / "memory")]
    return out


def _cgroup_oom_kills() -> int | None:
    """oom_kill of our memory cgroup: v2 memory.events, or v1 memory.oom_control."""
    for version, d in _memory_cgroup_dirs():
        count = _read_counter(d / ("memory.events" if version == 2 else "memory.oom_control"), "oom_kill")
        if count is not None:
            return count
    return None


# cgroup v1 writes "no limit" as the largest page-aligned long.
_V1_UNLIMITED_BYTES = 2**62


def cgroup_memory_headroom_bytes() -> int | None:
    """What our memory cgroup (a container's, a Slurm job's) still lets its processes take: its limit
    minus its usage, the reclaimable page cache (inactive_file) counted as free. None without a limit."""
    for version, d in _memory_cgroup_dirs():
        limit_file, usage_file = (
            ("memory.max", "memory.current")
            if version == 2
            else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        )
        try:
            limit_text = (d / limit_file).read_text().strip()
            usage = int((d / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= _V1_UNLIMITED_BYTES:
            return None
        inactive = _read_counter(
            d / "memory.stat", "inactive_file" if version == 2 else "total_inactive_file"
        )
        return max(0, int(limit_text) - usage + (inactive or 0))
    return None


def _vmstat_oom_kills() -> int | None:
    return _read_counter(Path("/proc/vmstat"), "oom_kill")
