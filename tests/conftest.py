from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """One torch thread in the test process, as in every case process: on a shared 2-core machine two
    OpenMP threads spin-wait for each other under load (one fixture took 497 s at load 15), and the
    losses the tests compare with case processes then come from the same reduction order."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite YAML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )
