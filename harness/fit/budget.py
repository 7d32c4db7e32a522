"""Parse `--budget` / `--device` / `--axis` into budgets; every mistake is one line naming the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError
from harness.fit.devices import DEVICES
from harness.runner import procmem
from harness.units import size_bytes

AXES = ("batch_size", "seq_len")
Kind = Literal["bytes", "host", "device"]


@dataclass(frozen=True)
class Budget:
    """`bytes` of memory a probe's peak must stay under. `kind` says which peak: `device` (a named GPU:
    the case's device total), `host` (this machine: the case process's whole RSS), `bytes` (a CUDA case's
    device total, or on CPU the case's own RSS above the process's post-import base)."""

    name: str
    bytes: int
    kind: Kind


def parse_bytes(text: str) -> int:
    value = size_bytes(text)
    if value is None:
        raise HarnessError(
            f"--budget {text!r}: not a size; write bytes with a unit, e.g. 24GiB, 200MiB, 8e9, or `host`"
        )
    if value < 1:
        raise HarnessError(f"--budget {text!r}: a budget must be at least 1 byte; e.g. 24GiB")
    return value


def host_available_bytes() -> int:
    """What a new process can take on this machine without pushing others to swap: MemAvailable, or less
    where our memory cgroup (a container, a Slurm job) has a limit: its headroom."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        import os

        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    headroom = procmem.cgroup_memory_headroom_bytes()
    return available if headroom is None else min(available, headroom)


def parse_budgets(budgets: list[str], devices: list[str]) -> list[Budget]:
    out: list[Budget] = []
    for spec in (b for arg in budgets for b in arg.split(",") if b.strip()):
        spec = spec.strip()
        if spec == "host":
            out.append(Budget("host", host_available_bytes(), "host"))
        elif spec in DEVICES:
            out.append(Budget(spec, DEVICES[spec].usable_bytes, "device"))
        elif spec.startswith("-"):
            raise HarnessError(f"--budget {spec!r}: a budget cannot be negative; e.g. 24GiB")
        else:
            out.append(Budget(spec, parse_bytes(spec), "bytes"))
    for name in (d.strip() for arg in devices for d in arg.split(",") if d.strip()):
        if name not in DEVICES:
            known = ", ".join(DEVICES)
            raise HarnessError(
                f"--device {name!r}: not in the device table (harness/fit/devices.py): {known}"
            )
        out.append(Budget(name, DEVICES[name].usable_bytes, "device"))
    if not out:
        raise HarnessError("harness fit: give --budget (24GiB, 200MiB, host) or --device (h100-80gb, ...)")
    return out


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise HarnessError(f"--axis {axis!r}: not a fit axis; use one of {', '.join(AXES)}")
    return axis
