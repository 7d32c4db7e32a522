"""SIGTERM and SIGHUP end a run the way Ctrl-C does: the case in flight is stopped, finished cases stay
saved, and the runner says how to resume. Each becomes a KeyboardInterrupt subclass, so every cleanup path
written for Ctrl-C (the case process group reaped, the run lock released) runs for them too."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The runner was asked to stop by a signal other than SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def as_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated; the previous handlers come back after."""
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def signum_of(exc: KeyboardInterrupt) -> int:
    return exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal (130 for Ctrl-C)."""
    return 128 + signum_of(exc)


def stopped_message(exc: KeyboardInterrupt, suite: Path, run_dir: Path | None) -> str:
    name = signal.Signals(signum_of(exc)).name
    what = "interrupted (Ctrl-C)" if name == "SIGINT" else f"stopped by {name}"
    if run_dir is None:
        return f"{what} before the run directory was created; nothing to resume: `harness run {suite}`"
    return (
        f"{what}: finished cases are saved in {run_dir}; the rest: `harness run {suite} --resume {run_dir}`"
    )
