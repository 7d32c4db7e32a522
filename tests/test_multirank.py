"""ZeRO-1 and FSDP2 as multi-rank cases: the case process launches ranks under torchrun (gloo on CPU).

Exact effects on the `ci` model (2 layers): with 2 ranks ZeRO-1 halves each rank's AdamW state, FSDP2
halves each rank's parameters and state, and both reproduce the single-process baseline's losses.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness import techniques as techreg
from harness.runner import ranks
from harness.runner.session import open_session
from harness.suite.load import load_suite
from harness.techniques.base import Context, Environment, Phase
from harness.techniques.order import rank
from tests.conftest import ROOT, run_cli

SUITE = """\
version: 1
name: multirank
defaults: {warmup_steps: 1, measured_steps: 3, timing_pass: false, timeout_s: 120}
models:
  ci: {size: ci, n_layers: 2}
workloads:
  train: {kind: train, batch_size: 4, seq_len: 64}
  crash: {kind: train, batch_size: 4, seq_len: 64}
  slow: {kind: train, batch_size: 4, seq_len: 64}
techniques:
  baseline: []
  zero1: [zero1]
  fsdp2: [fsdp2]
matrix:
"""
STEPS = 4  # warm-up + measured
# ZeRO-1 and FSDP2 reduce gradients over 2 ranks in another order than one process sums them.
LOSS_RTOL = 1e-5
CPU = Environment(cuda_available=False)


def ctx(batch_size: int = 4, device: str = "cpu") -> Context:
    return Context(
        device=device, dtype="float32", workload="train", batch_size=batch_size, seq_len=64, seed=0
    )


def write(tmp: Path, matrix: str) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(SUITE + textwrap.dedent(matrix))
    return path


def cases_by_name(path: Path) -> dict[str, Any]:
    return {f"{c.workload_name}/{c.techniques_name}": c for c in load_suite(path).cases}


def assert_losses_equal(ours: list[float], baseline: list[float]) -> None:
    assert len(ours) == len(baseline) == STEPS
    for a, b in zip(ours, baseline, strict=True):
        assert a == pytest.approx(b, rel=LOSS_RTOL)


# ---------------------------------------------------------------------------- declarations (fast) ----


def test_both_are_wrap_phase_after_checkpointing_and_launch_their_ranks():
    for name in ("zero1", "fsdp2"):
        cls = techreg.get(name)
        assert cls.phase == Phase.WRAP and rank(name) > rank("activation_checkpointing")
        assert cls.workloads == frozenset({"train"}) and cls.exact
        assert techreg.instantiate(name, None).launch_ranks(ctx()) == 2
        assert techreg.instantiate(name, {"ranks": 4}).launch_ranks(ctx()) == 4
        with pytest.raises(ValueError):
            techreg.instantiate(name, {"ranks": 1})


def test_conflicts_between_them_and_with_optimizers():
    def clash(*names: str) -> str | None:
        return techreg.conflict(techreg.compose((n, None) for n in names))

    assert "ZeRO-3" in (clash("zero1", "fsdp2") or "")
    assert "wraps AdamW" in (clash("zero1", "adamw") or "")
    assert clash("zero1", "sgd") and clash("fsdp2", "adamw_8bit") and clash("fsdp2", "adafactor")
    assert clash("fsdp2", "adamw") is None and clash("fsdp2", "sgd") is None
    assert clash("zero1", "chunked_cross_entropy") and clash("fsdp2", "chunked_cross_entropy")
    assert clash("zero1", "activation_checkpointing") is None
    assert clash("fsdp2", "activation_checkpointing", "autocast") is None


def test_unsupported_when_the_batch_does_not_split_or_gpus_are_missing():
    zero1 = techreg.instantiate("zero1", None)
    assert zero1.unsupported_reason(CPU, ctx(4)) is None
    assert "does not split" in (zero1.unsupported_reason(CPU, ctx(5)) or "")
    fsdp2 = techreg.instantiate("fsdp2", {"ranks": 64})
    reason = fsdp2.unsupported_reason(CPU, ctx(64, device="cuda")) or ""
    assert "CUDA device" in reason or "nccl" in reason


def test_in_the_case_process_itself_they_refuse_with_a_clear_error(tmp_path):
    case = cases_by_name(write(tmp_path, "- {model: [ci], workload: [train], techniques: [zero1]}\n"))
    with pytest.raises(RuntimeError, match="launch_ranks"):
        open_session(case["train/zero1"])


def test_merge_takes_slowest_step_summed_cpu_and_maxima_over_ranks():
    def rank(r: int, peak: int, state: int) -> dict[str, Any]:
        return {
            "rank": r,
            "status": "ok",
            "loss": [2.0, 1.0],
            "samples_per_step": 4,
            "tokens_per_step": 256,
            "device": "cpu",
            "model": {"param_count": 10, "param_bytes": 40},
            "metrics": {},
            "step_time_s": [0.1 * (r + 1), 0.2],
            "step_cpu_time_s": [0.1, 0.3],
            "host_rss_base_bytes": 100,
            "host_rss_peak_bytes": peak,
            "host_rss_peak_above_base_bytes": peak - 100,
            "optimizer_state_bytes": state,
        }

    out = ranks.merge([rank(0, 150, 7), rank(1, 180, 9)], 0, 2)
    assert out["status"] == "ok" and out["world_size"] == 2 and len(out["ranks"]) == 2
    assert out["step_time_s"] == [0.2, 0.2] and out["step_cpu_time_s"] == [0.2, 0.6]
    assert out["rank_host_rss_peak_above_base_bytes_max"] == 80 and out["rank_optimizer_state_bytes_max"] == 9
    assert out["param_bytes"] == 40 and out["host_memory_scope"].startswith("launcher")
    # The first rank to fail is the cause; the other's broken collective came after.
    cause = {"rank": 1, "status": "oom", "error": "MemoryError: x", "failed_at": 10.0}
    broken = {"rank": 0, "status": "error", "error": "RuntimeError: gloo read error", "failed_at": 10.5}
    failed = ranks.merge([broken, cause], 1, 2)
    assert failed["status"] == "oom" and failed["error"] == "rank 1: MemoryError: x"
    assert [r["status"] for r in failed["ranks"]] == ["error", "oom"]
    lost = ranks.merge([rank(0, 150, 7), None], -9, 2)
    assert lost["status"] == "error" and "rank(s) 1 wrote no result" in lost["error"]


# ------------------------------------------------------------------------ real ranks (torchrun) ----


@pytest.fixture(scope="module")
def baseline_losses(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[float], int, int]:
    """The single-process baseline's losses, parameter count and parameter tensor count."""
    tmp = tmp_path_factory.mktemp("baseline")
    case = cases_by_name(write(tmp, "- {model: [ci], workload: [train], techniques: [baseline]}\n"))
    session = open_session(case["train/baseline"])
    params = list(session.model.parameters())
    return [session.step(i) for i in range(STEPS)], sum(p.numel() for p in params), len(params)


@pytest.mark.slow
def test_zero1_halves_optimizer_state_per_rank_with_the_baselines_losses(tmp_path, baseline_losses):
    losses, n_params, n_tensors = baseline_losses
    case = cases_by_name(write(tmp_path, "- {model: [ci], workload: [train], techniques: [zero1]}\n"))
    marks: list[str] = []
    out = ranks.launch(case["train/zero1"], tmp_path, marks.append)
    assert out["status"] == "ok", out.get("error")
    assert marks == ["imported", "built", "warmed", "measured"]  # every phase relayed, in order
    assert_losses_equal(out["loss"], losses)
    assert [r["rank"] for r in out["ranks"]] == [0, 1]
    # AdamW keeps two fp32 moments per element (8 B) and a 4-byte step per tensor. ZeRO-1 gives each rank
    # whole tensors, balanced by size: the ranks' states add up to the full state exactly, and each holds
    # half of it to within the largest tensor's moments (65,536 elements of this model: 512 KiB).
    states = [r["optimizer_state_bytes"] for r in out["ranks"]]
    assert sum(states) == 8 * n_params + 4 * n_tensors
    for s in states:
        assert abs(s - (8 * n_params + 4 * n_tensors) / 2) <= 8 * 65_536
    assert all(r["param_bytes_local"] == 4 * n_params for r in out["ranks"])  # weights stay replicated
    assert out["rank_optimizer_state_bytes_max"] == max(states)
    for r in out["ranks"]:
        assert r["host_peak_method"] == "vmhwm" and r["host_rss_peak_above_base_bytes"] > 0
        assert set(r["phases"]) == {"startup", "build", "warmup", "measured"}
    assert out["rank_host_rss_peak_above_base_bytes_max"] == max(
        r["host_rss_peak_above_base_bytes"] for r in out["ranks"]
    )
    assert not list(tmp_path.glob("ranks-*"))  # a finished launch leaves no files behind


CRASH_HOOK = """\
import json, os, sys
if 'harness.runner.ranks' in ' '.join(sys.orig_argv) and os.environ.get('RANK') == '1':
    case = json.loads(open(sys.orig_argv[-1]).read())['case']
    if case['workload_name'] == 'crash':
        import harness.workloads.train as t
        step = t.TrainSession.step
        def boom(self, i):
            if i == 2:
                raise RuntimeError('boom in rank 1')
            return step(self, i)
        t.TrainSession.step = boom
"""


def _run_records(tmp: Path, name: str, matrix: str) -> dict[str, dict[str, Any]]:
    suite = _write_named(tmp, name, matrix)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(tmp), str(ROOT)]))
        proc = run_cli("run", str(suite), "--results", str(tmp / name), timeout=600)
    assert proc.returncode == 1, proc.stderr  # a case in each run fails (a crash, a timeout), as meant
    (run,) = [p for p in (tmp / name).iterdir() if p.is_dir()]
    recs = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    return {r["workload_name"]: r for r in recs}


def _write_named(tmp: Path, name: str, matrix: str) -> Path:
    folder = tmp / f"{name}-suite"
    folder.mkdir()
    return write(folder, matrix)


@pytest.fixture(scope="module")
def cli_records(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, Any]], Path]:
    """Real `harness run`s: a rank that raises and an FSDP2 case that finishes; then a case that runs
    past its timeout, with the timeout derived from how long the FSDP2 ranks took to start and build
    on this machine just now (a fixed budget failed under load)."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "sitecustomize.py").write_text(CRASH_HOOK)
    records = _run_records(
        tmp,
        "first",
        """\
        - {model: [ci], workload: [crash], techniques: [zero1]}
        - {model: [ci], workload: [train], techniques: [fsdp2]}
        """,
    )
    phases = records["train"]["phases"]
    started_s = phases["startup"]["duration_s"] + phases["build"]["duration_s"]
    timeout_s = max(10, round(3 * started_s))  # ranks up well before it, the case far from finishing
    records |= _run_records(
        tmp,
        "second",
        f"""\
        - defaults: {{measured_steps: 100000, timeout_s: {timeout_s}}}
          model: [ci]
          workload: [slow]
          techniques: [zero1]
        """,
    )
    records["slow"]["derived_timeout_s"] = timeout_s
    return records, tmp


def rank_processes_left(marker: str) -> list[int]:
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        alive = p.info["status"] != psutil.STATUS_ZOMBIE
        if alive and marker in cmd and ("harness.runner" in cmd or "torch.distributed.run" in cmd):
            left.append(p.pid)
    return left


@pytest.mark.slow
def test_cli_fsdp2_case_halves_parameters_and_state_per_rank(cli_records, baseline_losses):
    losses, n_params, n_tensors = baseline_losses
    rec = cli_records[0]["train"]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["world_size"] == 2 and rec["host_memory_scope"].startswith("max over ranks")
    assert_losses_equal(rec["loss"], losses)
    assert rec["param_count"] == n_params and rec["param_bytes"] == 4 * n_params  # the whole model
    # ... and so are its stored bytes: the sharded parameters count at their global shape (they read as
    # one rank's shard, half the model, beside zero1's whole one); buffers are replicated, stored once.
    assert rec["stored_weight_bytes"] == 4 * n_params + rec["buffer_bytes"]
    # Every dim 0 of this model is even, so each rank's shard is exactly half; every rank steps all
    # tensors (its shards), so each keeps every 4-byte step count.
    for r in rec["ranks"]:
        assert r["param_bytes_local"] == 4 * n_params // 2
        assert r["optimizer_state_bytes"] == 8 * n_params // 2 + 4 * n_tensors
    assert rec["rank_host_rss_peak_above_base_bytes_max"] > 0
    # The case's phases are the ranks' phases, relayed by the launcher.
    assert set(rec["phases"]) >= {"startup", "build", "warmup", "measured"}
    assert len(rec["step_time_s"]) == 3 and len(rec["step_cpu_time_s"]) == 3


@pytest.mark.slow
def test_cli_rank_crash_is_an_error_result_and_no_rank_survives(cli_records):
    records, tmp = cli_records
    rec = records["crash"]
    assert rec["status"] == "error"
    assert "rank 1: RuntimeError: boom in rank 1" in rec["error"]
    assert "RuntimeError" in rec["traceback_tail"]
    assert rank_processes_left(str(tmp)) == []


@pytest.mark.slow
def test_cli_timeout_kills_torchrun_and_every_rank(cli_records):
    records, tmp = cli_records
    rec = records["slow"]
    assert rec["status"] == "timeout" and f"timeout_s {rec['derived_timeout_s']}" in rec["error"]
    # The ranks were up (rank 0 relayed `imported`) when the case was killed: the timeout is three times
    # what the FSDP2 ranks needed to start and build in the run just before.
    assert "build" in rec["phases"]
    assert rank_processes_left(str(tmp)) == []
