"""`harness run --profile memray`: where a case's memory goes, as flame graphs next to its results.

Profiling is never done in a measured process: memray's hooks cost time and memory of their own. After
the memory and timing passes the parent runs one more case process, a *profile pass*, with
HARNESS_PROFILE=memray:<case dir> in its environment. The child then records from the start of the build
phase to the end of the measured phase (the phases that make the case's peak), with a memray Tracker
(native traces) and, on CUDA, torch's allocator history; the parent renders memray's flame graph of the
allocations live at the high-water mark. The artefacts are linked from the record (`artifacts`); a
profile pass that fails only sets `profile_unavailable_reason`, never the case's status.

This module is imported by the case process of every pass: keep its module-level imports to the
standard library, so measured passes load nothing they did not load before.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.case import CaseSpec
    from harness.runner.sampler import Nvml

PROFILERS = ("memray",)
ENV = "HARNESS_PROFILE"
MEMRAY_CAPTURE = "memray.bin"
MEMRAY_FLAMEGRAPH = "memray-flamegraph.html"
TORCH_SNAPSHOT = "torch-memory-snapshot.pickle"
TORCH_TIMELINE = "torch-memory-timeline.html"
# Allocation events torch keeps on CUDA (a ring buffer): enough for a few steps of a small model, and a
# bound on the snapshot's size for a big one.
TORCH_MAX_ENTRIES = 100_000


class ChildProfile:
    """The case process's side: a no-op unless the parent set HARNESS_PROFILE for a profile pass."""

    def __init__(self, torch: Any, on_cuda: bool, env: str | None = None) -> None:
        kind, _, where = (env if env is not None else os.environ.get(ENV, "")).partition(":")
        if kind and kind not in PROFILERS:
            raise ValueError(f"{ENV}={kind!r}: expected one of {', '.join(PROFILERS)}")
        self.out_dir = Path(where) if kind else None
        self._torch, self._on_cuda = torch, on_cuda
        self._tracker: Any = None
        self._cuda_history = False

    def start(self) -> None:
        if self.out_dir is None:
            return
        import memray

        (self.out_dir / MEMRAY_CAPTURE).unlink(missing_ok=True)  # memray refuses to overwrite
        # Native traces: most of a model's bytes are allocated in C++ (torch's CPU allocator), whose
        # Python stack alone would end at the op that called it.
        self._tracker = memray.Tracker(str(self.out_dir / MEMRAY_CAPTURE), native_traces=True)
        self._tracker.__enter__()
        if self._on_cuda:
            self._torch.cuda.memory._record_memory_history(max_entries=TORCH_MAX_ENTRIES)
            self._cuda_history = True

    def stop(self) -> None:
        """End the recording and write it out; safe to call twice (after `measured`, and on failure)."""
        if self._cuda_history:
            self._cuda_history = False
            self._write_torch_snapshot()
        if self._tracker is not None:
            tracker, self._tracker = self._tracker, None
            tracker.__exit__(None, None, None)  # closes the capture file: the child ends with os._exit

    def _write_torch_snapshot(self) -> None:
        assert self.out_dir is not None
        torch = self._torch
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        with open(self.out_dir / TORCH_SNAPSHOT, "wb") as f:
            pickle.dump(snapshot, f)
        from torch.cuda import _memory_viz

        # The page embeds the snapshot and loads torch's viewer (MemoryViz.js) from a CDN when opened.
        (self.out_dir / TORCH_TIMELINE).write_text(_memory_viz.trace_plot(snapshot))


def unavailable_reason(case: CaseSpec, profiler: str) -> str | None:
    """Why this case cannot be profiled here, decided before a process is spent on it."""
    from harness.runner.ranks import ranks_needed

    if profiler not in PROFILERS:
        return f"unknown profiler {profiler!r}; expected one of {', '.join(PROFILERS)}"
    if importlib.util.find_spec("memray") is None:
        return "memray is not installed (it runs on Linux and macOS only): pip install memray"
    if ranks_needed(case) > 1:
        return "a multi-rank case trains in its torchrun ranks; memray follows one process"
    return None


def profile_case(
    case: CaseSpec, case_dir: Path, run_dir: Path, nvml: Nvml | None, profiler: str
) -> dict[str, Any]:
    """Run the profile pass of a case that measured ok; return the fields to merge into its record."""
    reason = unavailable_reason(case, profiler)
    if reason:
        return {"profile": profiler, "profile_unavailable_reason": reason}
    t0 = time.monotonic()
    try:
        out = _memray_pass(case, case_dir, run_dir, nvml)
    except Exception as e:  # a profile that cannot be made is a stated gap, not a failed case
        out = {"profile_unavailable_reason": f"{type(e).__name__}: {e}"[:500]}
    out.setdefault("profile_unavailable_reason", None)
    return {"profile": profiler, "profile_wall_time_s": round(time.monotonic() - t0, 3), **out}


def _memray_pass(case: CaseSpec, case_dir: Path, run_dir: Path, nvml: Nvml | None) -> dict[str, Any]:
    from harness.runner.parent import run_pass  # the parent's modules stay out of every case process

    for name in (MEMRAY_CAPTURE, MEMRAY_FLAMEGRAPH, TORCH_SNAPSHOT, TORCH_TIMELINE):
        (case_dir / name).unlink(missing_ok=True)  # a resumed or repeated run must not link stale files
    # The untimed extras (breakdown, quality) come after the recording ends: not worth running here.
    quiet = case.model_copy(update={"breakdown": False, "quality": False})
    result = run_pass(
        quiet,
        case_dir / "profile",  # the pass's own case/out/stderr files, apart from the measured passes'
        False,  # the system allocator: memray sees malloc calls either way, and a 20 ms sampler
        nvml,
        time.monotonic() + case.timeout_s,
        extra_env={ENV: f"memray:{case_dir.resolve()}"},
    )
    if result.status != "ok":
        return {"profile_unavailable_reason": f"profile pass {result.status}: {result.error}"[:500]}
    capture = case_dir / MEMRAY_CAPTURE
    out = _capture_fields(capture)
    _flamegraph(capture, case_dir / MEMRAY_FLAMEGRAPH, case.timeout_s)
    rel = case_dir.relative_to(run_dir)
    artifacts = {"memray_flamegraph": MEMRAY_FLAMEGRAPH, "memray_capture": MEMRAY_CAPTURE}
    artifacts.update(torch_memory_snapshot=TORCH_SNAPSHOT, torch_memory_timeline=TORCH_TIMELINE)
    out["artifacts"] = {k: str(rel / v) for k, v in artifacts.items() if (case_dir / v).exists()}
    return out


def _capture_fields(capture: Path) -> dict[str, Any]:
    """memray's own totals over build, warm-up and measured steps (system allocator, heap bytes)."""
    from memray import FileReader

    reader = FileReader(str(capture))
    try:
        meta = reader.metadata
        return {
            "memray_peak_memory_bytes": int(meta.peak_memory),
            "memray_total_allocations": int(meta.total_allocations),
            "memray_capture_bytes": capture.stat().st_size,
        }
    finally:
        reader.close()


def _flamegraph(capture: Path, html: Path, timeout_s: float) -> None:
    """memray's flame graph of the allocations live at the peak (its default), one offline HTML file."""
    cmd = [sys.executable, "-m", "memray", "flamegraph", "--force", "--output", str(html), str(capture)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not html.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"memray flamegraph exited with code {proc.returncode}: {tail[0]}")
