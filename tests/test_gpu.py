"""GPU paths: torch allocator peaks per phase, NVML telemetry, CUDA-only techniques. Skipped without CUDA.

On a lent GPU machine: `bash .ci/gpu-check` runs these and suites/gpu.yaml, writing under $OUT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU"),
]

SUITE = """\
version: 1
defaults: {warmup_steps: 1, measured_steps: 3, device: cuda, timing_pass: false, reference_steps: 20}
models:
  m: {size: ci, n_layers: 6}
workloads:
  train: {kind: train, batch_size: 4, seq_len: 512}
  infer: {kind: infer, batch_size: 4, seq_len: 512}
techniques:
  baseline: []
  ckpt: [activation_checkpointing]
  sdpa: [sdpa_attention]
  fp16: [{autocast: {dtype: float16}}]
  offload: [activation_offloading]
matrix:
  - {model: [m], workload: [train], techniques: [baseline, ckpt, sdpa, fp16, offload]}
  - {model: [m], workload: [infer], techniques: [baseline, sdpa]}
"""


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gpu")
    (tmp / "gpu.yaml").write_text(SUITE)
    proc = run_cli("run", str(tmp / "gpu.yaml"), "--results", str(tmp / "res"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = (tmp / "res").iterdir()
    lines = (Path(run) / "results.jsonl").read_text().splitlines()
    return {r["case_name"]: r for r in map(json.loads, lines)}


def test_torch_and_nvml_figures_are_present(gpu_run):
    for name, r in gpu_run.items():
        assert r["status"] == "ok", (name, r.get("error"))
        assert (
            r["gpu_peak_allocated_bytes"] > 0
            and r["gpu_peak_reserved_bytes"] >= r["gpu_peak_allocated_bytes"]
        )
        assert r["gpu_process_peak_bytes"] > r["gpu_peak_allocated_bytes"]  # NVML includes the CUDA context
        assert r["gpu_device_peak_bytes"] >= r["gpu_process_peak_bytes"]
        assert r["phases"]["measured"]["gpu_peak_allocated_bytes"] is not None


def test_memory_techniques_lower_the_gpu_peak(gpu_run):
    base = gpu_run["m/train/baseline"]["gpu_peak_allocated_bytes"]
    for name in ("ckpt", "sdpa", "offload"):
        assert gpu_run[f"m/train/{name}"]["gpu_peak_allocated_bytes"] < base, name


def test_gpu_peaks_are_deterministic_for_a_fixed_program(tmp_path):
    (tmp_path / "g.yaml").write_text(
        SUITE.replace("techniques: [baseline, ckpt, sdpa, fp16, offload]", "techniques: [baseline]")
    )
    peaks = []
    for i in range(2):
        assert run_cli("run", str(tmp_path / "g.yaml"), "--results", str(tmp_path / f"r{i}")).returncode == 0
        (run,) = (tmp_path / f"r{i}").iterdir()
        rec = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
        peaks.append({r["case_name"]: r["gpu_peak_allocated_bytes"] for r in rec})
    assert peaks[0] == peaks[1]
