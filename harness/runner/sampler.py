"""The parent's sampler: host RSS (and NVML GPU memory when there is a GPU) of the case process.

It runs in a thread that sleeps between samples (Event.wait), so it never spins a core; the parent's main
thread blocks on the control pipe. A memory limit is enforced here: above it the case's process group
is killed and the case is recorded as `oom`.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness.runner import procmem


class Nvml:
    """NVML telemetry, or the reason there is none. Never raises on a machine without a GPU."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.reason: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if not self.handles:
                self.reason = "NVML found no GPU"
        except ImportError:
            self.reason = "pynvml (nvidia-ml-py) is not installed"
        except Exception as e:  # pynvml.NVMLError_LibraryNotFound and kin: no driver, no GPU
            self.reason = f"no NVIDIA driver/GPU ({type(e).__name__})"

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def sample(self, pids: set[int]) -> tuple[int, int]:
        """(bytes used by `pids` over all GPUs, bytes used on the GPUs they use, or on GPU 0)."""
        nv = self._nvml
        proc_total, device_total, used_any = 0, 0, False
        for h in self.handles:
            procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
            mine = sum((p.usedGpuMemory or 0) for p in procs if p.pid in pids)
            if mine or any(p.pid in pids for p in procs):
                used_any = True
                proc_total += mine
                device_total += nv.nvmlDeviceGetMemoryInfo(h).used
        if not used_any and self.handles:
            device_total = nv.nvmlDeviceGetMemoryInfo(self.handles[0]).used
        return proc_total, device_total

    def device_names(self) -> list[str]:
        names = []
        for h in self.handles:
            n = self._nvml.nvmlDeviceGetName(h)
            names.append(n.decode() if isinstance(n, bytes) else str(n))
        return names

    def driver_version(self) -> str | None:
        if not self.available:
            return None
        v = self._nvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Samples:
    t_s: list[float] = field(default_factory=list)
    host_rss_bytes: list[int] = field(default_factory=list)
    gpu_process_bytes: list[int] = field(default_factory=list)
    gpu_device_bytes: list[int] = field(default_factory=list)


def achieved_interval(samples: Samples, requested_s: float) -> dict[str, float | int | None]:
    """What the sampler really did: the median and the largest gap between consecutive samples. Under
    load the thread wakes late (11-13 ms seen while 2 ms was asked for), so a peak shorter than the gap
    can fall between samples; the kernel's high-water mark (VmHWM) stays the peak figure for that."""
    t = samples.t_s
    gaps = sorted(b - a for a, b in itertools.pairwise(t))
    out: dict[str, float | int | None] = {
        "sample_interval_requested_s": requested_s,
        "sample_count": len(t),
        "sample_interval_median_s": None,
        "sample_interval_max_gap_s": None,
    }
    if gaps:
        mid = len(gaps) // 2
        median = gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2
        out.update(sample_interval_median_s=round(median, 6), sample_interval_max_gap_s=round(gaps[-1], 6))
    return out


class Sampler(threading.Thread):
    def __init__(
        self, pid: int, interval_s: float, t0: float, nvml: Nvml | None, memory_limit_bytes: int | None
    ) -> None:
        super().__init__(daemon=True, name=f"sampler-{pid}")
        self.pid, self.interval_s, self.t0 = pid, interval_s, t0
        self.nvml = nvml if nvml is not None and nvml.available else None
        self.limit = memory_limit_bytes
        self.samples = Samples()
        self.killed_for_memory: int | None = None  # the RSS that crossed the limit
        # RSS after the case's imports (set at the `imported` mark): the limit applies above it, so a
        # 150 MB limit means 150 MB of the case's own memory, not of torch's import.
        self.base_bytes: int | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._phase_max = 0
        self._phase_gpu_max = (0, 0)
        # File-backed resident pages since the imports: their highest level and the largest fall below it
        # seen in this phase. A fall is the kernel reclaiming the case's pages (memory pressure on the
        # machine): RSS then drops with no free by the case, and a figure above base reads low.
        self._file_high: int | None = None
        self._phase_file_drop = 0

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample_now()
            self._halt.wait(self.interval_s)

    def sample_now(self) -> int | None:
        both = procmem.rss_and_file_bytes(self.pid)
        rss, file = both if both is not None else (procmem.rss_bytes(self.pid), None)
        if rss is None:
            return None
        gpu = self.nvml.sample({self.pid}) if self.nvml else None
        with self._lock:
            s = self.samples
            s.t_s.append(time.monotonic() - self.t0)
            s.host_rss_bytes.append(rss)
            self._phase_max = max(self._phase_max, rss)
            if file is not None and self.base_bytes is not None:
                self._file_high = max(self._file_high or 0, file)
                self._phase_file_drop = max(self._phase_file_drop, self._file_high - file)
            if gpu is not None:
                s.gpu_process_bytes.append(gpu[0])
                s.gpu_device_bytes.append(gpu[1])
                self._phase_gpu_max = (
                    max(self._phase_gpu_max[0], gpu[0]),
                    max(self._phase_gpu_max[1], gpu[1]),
                )
        base = self.base_bytes
        if (
            self.limit is not None
            and base is not None
            and rss - base > self.limit
            and not self.killed_for_memory
        ):
            self.killed_for_memory = rss
            procmem.kill_group(self.pid)
        return rss

    def take_phase_max(self) -> tuple[int, tuple[int, int] | None, int | None]:
        """Highest RSS (and GPU figures) since the last call, and the largest fall of file-backed RSS
        below its level since the imports (None before the imports or without /proc); starts the next
        phase's maxima."""
        self.sample_now()
        with self._lock:
            host, gpu = self._phase_max, self._phase_gpu_max
            drop = self._phase_file_drop if self._file_high is not None else None
            self._phase_max, self._phase_gpu_max, self._phase_file_drop = 0, (0, 0), 0
        return host, (gpu if self.nvml else None), drop

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)
