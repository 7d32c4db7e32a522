"""`compare` cannot mislead: without --policy it uses the committed policy (or defaults that never gate step
times), its summary counts only gated verdicts, and a CPU with another instruction set is a changed
environment for quality and time, even under the same model name."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

from harness.cli import main
from harness.compare import Comparison, compare_snapshots
from harness.compare.outputs import headline
from harness.compare.policy import PolicyFile
from harness.compare.snapshot import snapshot_of_run
from harness.results import fingerprint
from harness.results.load import Run
from harness.results.provenance import collect
from tests.conftest import ROOT
from tests.fixtures_results import make_manifest, smoke_records, write_run

NAMES = list(PolicyFile().for_suite(None))
AVX2 = "avx2 f16c fma"
BF16 = "avx2 avx512_bf16 avx512f f16c fma"


def compare_cli(cwd: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(["compare", *args])
    finally:
        os.chdir(here)
    return code, out.getvalue()


def noisy_times(run_id: str, scale: float) -> list[dict[str, Any]]:
    records = smoke_records(run_id)
    for r in records:
        if r["status"] == "ok":
            r["step_time_s"] = [t * scale for t in [0.10, 0.11, 0.10, 0.12, 0.10]]
    return records


def judged(runs: list[Run], policy: PolicyFile) -> Comparison:
    base, cur = (snapshot_of_run(r, NAMES) for r in runs)
    return compare_snapshots(base, cur, policy)


def test_the_manifest_fingerprints_isa_microarchitecture_and_torch_build():
    import torch

    env = collect([], None)
    assert env["torch_build"].startswith(torch.__version__) and " cpu " in env["torch_build"]
    assert env["cpu_microarch"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2 " in flags:
        assert "avx2" in env["cpu_isa"].split()
    if "avx512_bf16" in flags:
        assert "avx512_bf16" in env["cpu_isa"].split()


def test_isa_flags_keep_only_what_changes_kernels():
    assert fingerprint.isa_flags("fpu vme sse sse2 avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 ht") == [
        "amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f", "fma"]  # fmt: skip


def test_another_isa_under_the_same_model_name_blocks_quality_and_time(tmp_path):
    base = smoke_records()
    cur = smoke_records("run-b")
    for r in cur:
        r["loss"] = [x * 1.002 for x in r["loss"]]  # 0.2 %: what two "AMD EPYC" CPUs gave
    runs = [
        Run(Path("a"), "run-a", make_manifest("run-a", cpu_isa=AVX2), base),
        Run(Path("b"), "run-b", make_manifest("run-b", cpu_isa=BF16), cur),
    ]
    comparison = judged(runs, PolicyFile())
    quality = [v for v in comparison.verdicts if v.kind == "quality"]
    assert quality and all(v.status == "not comparable" for v in quality)
    assert all("cpu_isa" in v.detail for v in quality)
    assert comparison.exit_code == 3
    same = [
        Run(Path("a"), "run-a", make_manifest("run-a", cpu_isa=AVX2), base),
        Run(Path("b"), "run-b", make_manifest("run-b", cpu_isa=AVX2), cur),
    ]
    same_isa = judged(same, PolicyFile())
    assert {v.status for v in same_isa.verdicts if v.kind == "quality"} == {"regressed"}


def test_without_policy_step_time_noise_does_not_fail_the_gate(tmp_path):
    base = write_run(tmp_path / "r", noisy_times("run-a", 1.0), timelines=False)
    cur = write_run(tmp_path / "r", noisy_times("run-b", 1.8), make_manifest("run-b"), timelines=False)
    code, out = compare_cli(tmp_path, str(base), str(cur), "--json", str(tmp_path / "v.json"))
    assert code == 0, out
    assert "policy: built-in defaults (step times shown, not gated)" in out
    verdicts = json.loads((tmp_path / "v.json").read_text())["verdicts"]
    times = [v for v in verdicts if v["metric"] == "step_time_s"]
    assert times and all(not v["gated"] for v in times)
    assert any(v["status"] == "regressed" for v in times)  # shown as it is, just not gated


def test_without_policy_the_committed_policy_is_used_from_a_checkout(tmp_path):
    base = write_run(tmp_path / "r", noisy_times("run-a", 1.0), timelines=False)
    cur = write_run(tmp_path / "r", noisy_times("run-b", 1.8), make_manifest("run-b"), timelines=False)
    code, out = compare_cli(ROOT, str(base), str(cur))
    assert "policy: results/baselines/policy.yaml" in out
    assert code == 0, out


def test_the_summary_counts_only_gated_verdicts(tmp_path):
    base = noisy_times("run-a", 1.0)
    cur = noisy_times("run-b", 1.8)
    runs = [
        Run(Path("a"), "run-a", make_manifest("run-a"), base),
        Run(Path("b"), "run-b", make_manifest("run-b"), cur),
    ]
    policy = PolicyFile(metrics={"step_time_s": {"gate": False}})
    comparison = judged(runs, policy)
    line = headline(comparison)
    assert "regressed" not in line.split("(")[0]  # the step-time regressions are not gated
    ungated = sum(not v.gated for v in comparison.verdicts)
    assert f"({ungated} not gated, shown only)" in line and line.endswith("Exit 0: no regression.")
