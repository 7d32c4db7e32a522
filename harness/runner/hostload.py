"""How busy the machine was while a case was timed: load average, CPU pressure (PSI) and steal.

Step times on a shared machine follow other people's work; these figures say how much there was. Each
timing pass is bracketed by two snapshots; `between` turns them into rates over the pass. Everything is
read from /proc (no torch, no psutil), and a figure the kernel does not offer is None, never a guess.

The `disturbed` bound: a step's wall time is compared with the CPU time the case process got in it. With
the process running alone on its cores the two agree (within a few per cent for one thread); when other
work takes the cores, wall time grows and CPU time does not. A case's times are `disturbed` when the
median step wall time exceeds the median step CPU time by more than DISTURBED_WALL_OVER_CPU, or when
other work ran beside the timing pass (CPU pressure above BUSY_CPU_PRESSURE_FRACTION). The second catches
what wall/CPU cannot: the kernel groups CPU time by session, so a load in another session can leave the
case its core while it shares the core's SMT sibling, caches and memory bandwidth, which slows the CPU
time itself (measured here: the smoke suite beside one busy loop per core in one session, CPU pressure
52 %, wall = CPU time, yet infer step-time ratios moved 19-24 %).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

# Wall time more than 15 % above the CPU time of the step: the case waited for a core.
DISTURBED_WALL_OVER_CPU = 1.15
# Some task waited for a CPU during more than 10 % of the timing pass (PSI "some"): other work ran beside
# the case. A quiet run here: 0.7 %; the harness's own sampler wakes every 20 ms and costs far less.
BUSY_CPU_PRESSURE_FRACTION = 0.10


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _psi_cpu_some_total_us() -> int | None:
    """Total microseconds some task waited for a CPU (Linux PSI, /proc/pressure/cpu); None without PSI."""
    text = _read("/proc/pressure/cpu")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("some"):
            for part in line.split():
                if part.startswith("total="):
                    return int(part[6:])
    return None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot (/proc/stat); None where there is no /proc."""
    text = _read("/proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def snapshot() -> dict[str, Any]:
    """The machine's load figures now."""
    try:
        load1, load5, load15 = os.getloadavg()
    except OSError:
        load1 = load5 = load15 = float("nan")
    jiffies = _cpu_jiffies()
    return {
        "t": time.monotonic(),
        "loadavg_1m": round(load1, 2),
        "loadavg_5m": round(load5, 2),
        "loadavg_15m": round(load15, 2),
        "psi_cpu_some_total_us": _psi_cpu_some_total_us(),
        "steal_jiffies": jiffies[0] if jiffies else None,
        "total_jiffies": jiffies[1] if jiffies else None,
        "cpu_count": os.cpu_count(),
    }


def between(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Load over an interval: load averages at both ends, the share of the interval in which some task
    waited for a CPU (PSI `some`), and the share of CPU time the hypervisor stole."""
    wall = end["t"] - start["t"]
    out: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "loadavg_1m_start": start["loadavg_1m"],
        "loadavg_1m_end": end["loadavg_1m"],
        "cpu_count": end["cpu_count"],
        "cpu_pressure_some_fraction": None,
        "cpu_steal_fraction": None,
    }
    p0, p1 = start["psi_cpu_some_total_us"], end["psi_cpu_some_total_us"]
    if p0 is not None and p1 is not None and wall > 0:
        out["cpu_pressure_some_fraction"] = round((p1 - p0) / 1e6 / wall, 3)
    s0, s1 = start["steal_jiffies"], end["steal_jiffies"]
    t0, t1 = start["total_jiffies"], end["total_jiffies"]
    if None not in (s0, s1, t0, t1) and t1 > t0:
        out["cpu_steal_fraction"] = round((s1 - s0) / (t1 - t0), 4)
    return out


def manifest_fields(prefix: str) -> dict[str, Any]:
    """Load figures for the run's manifest, at its `start` or its `end`."""
    snap = snapshot()
    text = _read("/proc/pressure/cpu")
    fields = {
        "loadavg_1m": snap["loadavg_1m"],
        "loadavg_5m": snap["loadavg_5m"],
        "loadavg_15m": snap["loadavg_15m"],
        "cpu_count": snap["cpu_count"],
        "psi_cpu": text.splitlines()[0] if text else None,
    }
    return {f"{prefix}_{k}": v for k, v in fields.items()}


def disturbed(
    step_time_s: list[float], step_cpu_time_s: list[float], cpu_pressure_some_fraction: float | None = None
) -> tuple[bool | None, str | None]:
    """(disturbed, why): True when the median step waited for a core (DISTURBED_WALL_OVER_CPU) or other
    work ran beside the timing pass (BUSY_CPU_PRESSURE_FRACTION); None without step figures.

    The main thread runs through the whole step, so an undisturbed step's CPU time is at least its wall
    time (more with several threads): a wall time above it means the process was waiting for a core."""
    if not step_time_s or not step_cpu_time_s:
        return None, None
    wall, cpu = statistics.median(step_time_s), statistics.median(step_cpu_time_s)
    if wall > DISTURBED_WALL_OVER_CPU * cpu:
        return (
            True,
            f"waited for a core: median step wall/CPU time {wall / cpu:.2f} > {DISTURBED_WALL_OVER_CPU}",
        )
    if cpu_pressure_some_fraction is not None and cpu_pressure_some_fraction > BUSY_CPU_PRESSURE_FRACTION:
        return True, (
            f"other work beside it: CPU pressure {cpu_pressure_some_fraction:.0%} of the timing pass > "
            f"{BUSY_CPU_PRESSURE_FRACTION:.0%} (shared cores, caches and memory bandwidth slow CPU time too)"
        )
    return False, None


def ratio_interval(
    case_times: list[float], base_times: list[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float] | None:
    """The ratio of medians case/baseline with its 95 % bootstrap interval (percentile method)."""
    if not case_times or not base_times:
        return None
    base_med = statistics.median(base_times)
    if base_med <= 0:
        return None
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        c = statistics.median(rng.choices(case_times, k=len(case_times)))
        b = statistics.median(rng.choices(base_times, k=len(base_times)))
        if b > 0:
            ratios.append(c / b)
    ratios.sort()
    lo = ratios[int(0.025 * (len(ratios) - 1))]
    hi = ratios[int(0.975 * (len(ratios) - 1))]
    return statistics.median(case_times) / base_med, lo, hi
