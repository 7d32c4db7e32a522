"""Where and with what a run was made: stored in every run's manifest."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness
from harness.results import fingerprint


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(harness.__file__).parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(gpu_names: list[str], driver: str | None) -> dict[str, Any]:
    import torch

    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain")
    return {
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "harness_version": harness.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_isa": fingerprint.cpu_isa(),
        "cpu_microarch": fingerprint.cpu_microarch(),
        "torch_build": fingerprint.torch_build(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpu_names": gpu_names,
        "gpu_driver_version": driver,
        "host": socket.gethostname(),
    }
