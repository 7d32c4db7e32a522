"""The case process: reads a case file, runs the workload, announces phases, writes a result file.

    python -m harness.runner.child CASE.json OUT.json WRITE_FD READ_FD

At each phase boundary it writes one JSON line on WRITE_FD and blocks until the parent answers on
READ_FD: the parent reads the kernel's high-water mark for the phase that ended and resets it before the
next phase starts, so each phase's peak is exact. Failures are caught and written as results; the
parent classifies a process that dies without writing one.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from harness.logs import quiet_third_party_logs

# Shared with the rank processes of a multi-rank case (runner/ranks.py), which import them from caseproc.
from harness.runner.caseproc import classify as _classify
from harness.runner.caseproc import gpu_phase as _gpu_phase
from harness.runner.caseproc import model_figures as _model_figures
from harness.runner.caseproc import run_steps as _steps

PHASE_MARKS = ("imported", "built", "warmed", "measured", "done")


class Control:
    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._w: IO[str] = os.fdopen(write_fd, "w", buffering=1)
        self._r: IO[str] = os.fdopen(read_fd, "r")

    def mark(self, name: str, **info: Any) -> None:
        self._w.write(json.dumps({"mark": name, "t": time.monotonic(), **info}) + "\n")
        self._w.flush()
        if not self._r.readline():  # the parent is gone: nobody will read our figures
            os._exit(3)


def _die_with_parent() -> None:
    """SIGKILL this process when the runner dies, so a killed `harness run` leaves nothing behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(3)


def built_session(case: Any) -> Any:
    """The case's session as its steps will see it: built, with everything the build replaced freed."""
    from harness.runner.session import context_for, open_session

    session = open_session(case, context_for(case))
    # Modules a technique replaced (torch.ao's quantize_dynamic swaps whole layers) sit in reference
    # cycles that only the cyclic collector frees, and it may not run for the whole case: without this
    # the fp32 layers stay resident beside their replacements through the measured phase (77.5 MiB ->
    # 30.8 MiB for dynamic int8 on a 6-layer vocab-4096 model).
    gc.collect()
    return session


def run(case_path: Path, ctl: Control) -> dict[str, Any]:
    import torch

    if os.environ.get("HARNESS_PASS") != "timing" or _trains(case_path):
        # Optimizers import it lazily (+70 MiB that is no technique's), so a memory pass takes it before
        # its phases; a timing pass of a case without an optimizer skips it (~half of torch's import).
        import torch._dynamo

    from harness.case import CaseSpec
    from harness.runner.extras import extras
    from harness.runner.profile import ChildProfile
    from harness.runner.ranks import launch as launch_ranks
    from harness.runner.ranks import ranks_needed
    from harness.runner.session import techniques_for

    case = CaseSpec.model_validate_json(case_path.read_text())
    if ranks_needed(case) > 1:  # ZeRO/FSDP: ranks under torchrun train and measure themselves
        return launch_ranks(case, case_path.parent, ctl.mark)
    torch.set_num_threads(case.threads)
    on_cuda = case.device == "cuda"
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "loss": []}
    try:
        for t in techniques_for(case):
            t.preload()
        if on_cuda:
            torch.cuda.init()
    except Exception as e:
        out.update(_classify(e, torch))
        return out
    ctl.mark("imported", **_gpu_phase(torch, on_cuda))
    profile = ChildProfile(torch, on_cuda)  # records only in a profile pass (HARNESS_PROFILE)
    try:
        profile.start()
        session = built_session(case)
        out.update(_model_figures(session.model))
        out["serving"] = bool(getattr(session, "serving", False))
        out["samples_per_step"], out["tokens_per_step"] = session.samples_per_step, session.tokens_per_step
        ctl.mark("built", **_gpu_phase(torch, on_cuda))
        stop = _peak_repeated(torch, on_cuda) if _short_memory_pass(case) else None
        _steps(torch, session, range(case.warmup_steps), out, on_cuda, timed=False, stop=stop)
        ctl.mark("warmed", **_gpu_phase(torch, on_cuda))
        measured = range(case.warmup_steps, case.warmup_steps + case.measured_steps)
        stop = _peak_repeated(torch, on_cuda) if _short_memory_pass(case) else None
        _steps(torch, session, measured, out, on_cuda, stop=stop)
        ctl.mark("measured", **_gpu_phase(torch, on_cuda))
        profile.stop()
        for t in session.techniques:  # those that built it: a technique may say what it found then
            out.update(t.metrics(session.model))
        out.update(session.extra_metrics())
        out["status"] = "ok"
        if _runs_extras(case):
            out.update(extras(case, session))  # untimed, outside the peak phases
    except Exception as e:  # a failure is a result: classify it and go on to report it
        out.update(_classify(e, torch))
    finally:
        profile.stop()  # a failed step still leaves a readable capture
    return out


def _trains(case_path: Path) -> bool:
    return bool(json.loads(case_path.read_text())["workload"]["kind"] in ("train", "distill"))


def _short_memory_pass(case: Any) -> bool:
    """A memory pass followed by timing passes only needs the steps until the per-step peak repeats, in
    warm-up and in the measured phase (each phase's high-water mark is its own): the timing pass runs
    every step, and reports the losses and the extras."""
    return os.environ.get("HARNESS_PASS") == "memory" and bool(case.timing_pass)


def _runs_extras(case: Any) -> bool:
    """The extras (quality, breakdown) need the model after every measured step: in the memory pass
    when there is no timing pass, else in the first timing pass (HARNESS_EXTRAS=1)."""
    if os.environ.get("HARNESS_PASS") == "timing":
        return os.environ.get("HARNESS_EXTRAS") == "1"
    return not _short_memory_pass(case)


# Measured steps in a short memory pass: at least this many, and the peak must not have risen in the
# last REPEATED_STEPS of them.
MIN_MEMORY_STEPS, REPEATED_STEPS = 3, 2
# glibc's heap and Python's objects (the losses, the step times) add a page now and then: a rise of at
# most 16 KiB over those steps counts as repeated (a full pass of 15 more steps could add < 0.25 MiB;
# host figures reproduce to 0.5 MiB anyway). torch's CUDA peak must not move at all.
HWM_CREEP_KIB = 16


def _peak_repeated(torch: Any, on_cuda: bool) -> Any:
    """A predicate over the measured steps run so far: True once the process's high-water marks (the
    kernel's VmHWM, which the parent reset at the `warmed` mark, and torch's CUDA peak) have not risen
    over the last REPEATED_STEPS steps, i.e. the per-step peak has repeated."""
    history: list[tuple[int, int]] = []

    def marks() -> tuple[int, int]:
        hwm = 0
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
        gpu = int(torch.cuda.max_memory_allocated()) if on_cuda else 0
        return hwm, gpu

    def repeated() -> bool:
        history.append(marks())
        if len(history) < MIN_MEMORY_STEPS:
            return False
        (hwm0, gpu0), (hwm1, gpu1) = history[-REPEATED_STEPS - 1], history[-1]
        return hwm1 - hwm0 <= HWM_CREEP_KIB and gpu1 == gpu0

    if not Path("/proc/self/status").exists():
        return None  # no kernel high-water mark to watch: run every step
    return repeated


def main(argv: list[str]) -> int:
    case_path, out_path, write_fd, read_fd = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    _die_with_parent()
    quiet_third_party_logs()  # the stderr tail of a failed case is for its own error
    ctl = Control(write_fd, read_fd)
    result = run(case_path, ctl)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out_path)
    ctl.mark("done")  # the parent reads the last phase's high-water mark before we exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips interpreter teardown (~0.4 s): nothing is left to measure


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
