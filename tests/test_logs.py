"""Third-party import noise stays out of harness's output and a failed case's stderr tail."""

from __future__ import annotations

import subprocess
import sys

import pytest

IMPORT = "import torchao"
QUIET = "from harness.logs import quiet_third_party_logs; quiet_third_party_logs(); import torchao"


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stderr


def test_torchao_import_warnings_are_quieted():
    pytest.importorskip("torchao")
    loud = _stderr(IMPORT)
    if "Failed to load" not in loud and "register_constant" not in loud:
        pytest.skip("this torchao/torch build logs nothing on import (its CUDA kernels load here)")
    quiet = _stderr(QUIET)
    assert "Failed to load" not in quiet and "register_constant" not in quiet, quiet[-1000:]
