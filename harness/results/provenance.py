"""Where and with what a run was made: stored in every run's manifest."""

from __future__ import annotations

import os
import platform
import re
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


def _torch_build(gpu_names: list[str]) -> dict[str, Any]:
    """torch's version, CUDA build and availability; without importing torch when the parent has not
    (the version from its metadata and version.py; CUDA is usable only where NVML found a GPU)."""
    if "torch" in sys.modules or gpu_names:
        import torch

        return {
            "torch_version": torch.__version__,
            "cuda_available": torch.cuda.is_available(),
            "cuda_version": torch.version.cuda,
        }
    from importlib import metadata, util

    cuda = None
    spec = util.find_spec("torch")
    if spec and spec.origin:
        text = Path(spec.origin).with_name("version.py").read_text()
        m = re.search(r"^cuda(?:: [^=]+)? = '([^']+)'", text, re.M)
        cuda = m.group(1) if m else None
    return {"torch_version": metadata.version("torch"), "cuda_available": False, "cuda_version": cuda}


def collect(gpu_names: list[str], driver: str | None) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain")
    return {
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "harness_version": harness.__version__,
        **_torch_build(gpu_names),
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_isa": fingerprint.cpu_isa(),
        "cpu_microarch": fingerprint.cpu_microarch(),
        "torch_build": fingerprint.torch_build(),
        "cpu_count": os.cpu_count(),
        "gpu_names": gpu_names,
        "gpu_driver_version": driver,
        "host": socket.gethostname(),
    }
