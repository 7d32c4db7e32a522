"""The case process: reads a case file, runs the workload, announces phases, writes a result file.

    python -m harness.runner.child CASE.json OUT.json WRITE_FD READ_FD

At each phase boundary it writes one JSON line on WRITE_FD and blocks until the parent answers on
READ_FD: the parent reads the kernel's high-water mark for the phase that ended and resets it before the
next phase starts, so each phase's peak is exact. Failures are caught and written as results; the
parent classifies a process that dies without writing one.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

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


def run(case_path: Path, ctl: Control) -> dict[str, Any]:
    import torch
    import torch._dynamo  # optimizers import it lazily: +70 MiB that is no technique's

    from harness.case import CaseSpec
    from harness.runner.extras import extras
    from harness.runner.profile import ChildProfile
    from harness.runner.ranks import launch as launch_ranks
    from harness.runner.ranks import ranks_needed
    from harness.runner.session import context_for, open_session, techniques_for

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
        session = open_session(case, context_for(case))
        out.update(_model_figures(session.model))
        out["samples_per_step"], out["tokens_per_step"] = session.samples_per_step, session.tokens_per_step
        ctl.mark("built", **_gpu_phase(torch, on_cuda))
        _steps(torch, session, range(case.warmup_steps), out, on_cuda, timed=False)
        ctl.mark("warmed", **_gpu_phase(torch, on_cuda))
        _steps(
            torch, session, range(case.warmup_steps, case.warmup_steps + case.measured_steps), out, on_cuda
        )
        ctl.mark("measured", **_gpu_phase(torch, on_cuda))
        profile.stop()
        for t in techniques_for(case):
            out.update(t.metrics(session.model))
        out.update(session.extra_metrics())
        out["status"] = "ok"
        out.update(extras(case, session))  # untimed, outside the peak phases
    except Exception as e:  # a failure is a result: classify it and go on to report it
        out.update(_classify(e, torch))
    finally:
        profile.stop()  # a failed step still leaves a readable capture
    return out


def main(argv: list[str]) -> int:
    case_path, out_path, write_fd, read_fd = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    _die_with_parent()
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
