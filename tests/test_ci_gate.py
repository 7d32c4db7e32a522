"""The committed baseline and policy that .ci/gate uses: a raised memory figure fails, an equal one passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

BASELINE = ROOT / "results" / "baselines" / "smoke-cpu.json"
POLICY = ROOT / "results" / "baselines" / "policy.yaml"
MEM = "breakdown.tensor_peak_bytes"  # the gated memory figure (see policy.yaml)


def current_from_baseline(tmp_path: Path, scale: float = 1.0, case: str | None = None) -> Path:
    data = json.loads(BASELINE.read_text())
    for c in data["cases"]:
        if case is None or c["case_name"] == case:
            c["metrics"][MEM] = int(c["metrics"][MEM] * scale)
    path = tmp_path / "current.json"
    path.write_text(json.dumps(data))
    return path


def test_the_baseline_covers_the_smoke_suite():
    from harness.suite.load import load_suite

    ids = {c["case_id"] for c in json.loads(BASELINE.read_text())["cases"]}
    assert ids == {c.case_id for c in load_suite(ROOT / "suites" / "smoke.yaml").cases}, (
        "suites/smoke.yaml changed: refresh the baseline (see .ci/gate)"
    )


def test_unchanged_figures_pass(tmp_path):
    proc = run_cli("compare", str(BASELINE), str(current_from_baseline(tmp_path)), "--policy", str(POLICY))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("raise_by", [0.01, 0.05])
def test_a_raised_memory_figure_fails(tmp_path, raise_by):
    # +1 % is caught where it exceeds the allocator-granularity floor of 1 MiB: the ci-deep cases.
    name = "ci-deep/train-long/baseline"
    current = current_from_baseline(tmp_path, 1 + raise_by, name)
    junit = tmp_path / "gate.xml"
    proc = run_cli("compare", str(BASELINE), str(current), "--policy", str(POLICY), "--junit", str(junit))
    assert proc.returncode == 1, proc.stdout
    assert "regressed" in proc.stdout
    assert junit.read_text().count("<failure") == 1
