"""suites/smoke.yaml as a user runs it: the techniques' effects show, and the two peak figures agree."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict[str, dict[str, Any]]:
    # Memory figures come from the memory pass; skipping the timing passes halves the time and leaves
    # every case id unchanged (timing_pass is a run setting, not part of a case's definition).
    tmp = tmp_path_factory.mktemp("smoke")
    text = (
        (ROOT / "suites" / "smoke.yaml")
        .read_text()
        .replace("defaults:\n", "defaults:\n  timing_pass: false\n", 1)
    )
    suite = tmp / "smoke.yaml"
    suite.write_text(text)
    proc = run_cli("run", str(suite), "--results", str(tmp / "res"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = (tmp / "res").iterdir()
    recs = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    return {r["case_name"]: r for r in recs}


def peak(rec: dict[str, Any]) -> int:
    return int(rec["host_rss_peak_above_base_bytes"])


def test_every_smoke_case_is_ok(smoke):
    assert {name: r["status"] for name, r in smoke.items() if r["status"] != "ok"} == {}


def test_checkpointing_lowers_the_training_peak_at_depth_6(smoke):
    base, ckpt = smoke["ci-deep/train-long/baseline"], smoke["ci-deep/train-long/activation_checkpointing"]
    assert peak(ckpt) < 0.8 * peak(base)


def test_sdpa_lowers_the_peak_at_seq_512(smoke):
    base, sdpa = smoke["ci-deep/train-long/baseline"], smoke["ci-deep/train-long/sdpa_attention"]
    assert base["seq_len"] >= 512
    assert peak(sdpa) < 0.8 * peak(base)


def test_exact_techniques_keep_the_losses(smoke):
    base = smoke["ci-deep/train-long/baseline"]["loss"]
    # Checkpointing recomputes the same ops: equal to rounding. SDPA sums in another order: ~1e-5 drift.
    assert smoke["ci-deep/train-long/activation_checkpointing"]["loss"] == pytest.approx(base, rel=1e-6)
    assert smoke["ci-deep/train-long/sdpa_attention"]["loss"] == pytest.approx(base, rel=1e-4)


@pytest.mark.parametrize("phase", ["startup", "build", "warmup", "measured"])
def test_sampled_peak_and_kernel_high_water_mark_agree_within_1_percent(smoke, phase):
    for name, rec in smoke.items():
        p = rec["phases"][phase]
        hwm, sampled = p["host_rss_peak_bytes"], p["host_rss_sampled_peak_bytes"]
        assert abs(hwm - sampled) <= 0.01 * hwm, (name, phase, hwm, sampled)


def test_measured_tensor_peak_is_within_10_percent_of_the_prediction(smoke):
    # Two model sizes (ci, ci-deep) x the spine's techniques, as the prediction adapts to each.
    ratios = {
        n: r["tensor_peak_measured_over_predicted"] for n, r in smoke.items() if r["workload_kind"] == "train"
    }
    assert len(ratios) == 7
    assert all(0.9 <= v <= 1.1 for v in ratios.values()), ratios


def test_quality_sits_beside_memory(smoke):
    for name, r in smoke.items():
        assert r["heldout_loss_nats"] > 0 and r["perplexity"] > 1, name
        if r["workload_kind"] == "infer":
            assert r["kl_divergence_nats"] >= -1e-6 and 0 <= r["top1_agreement_fraction"] <= 1, name
    # Inference runs on weights trained on the corpus: far better than a uniform guess over 256 bytes.
    assert smoke["ci/infer/baseline"]["heldout_loss_nats"] < 0.8 * math.log(256)
    assert smoke["ci/infer/baseline"]["kl_divergence_nats"] == 0.0
    assert smoke["ci/infer/autocast_bf16"]["kl_divergence_nats"] > 0


def test_breakdown_parameters_are_exact(smoke):
    r = smoke["ci/train/baseline"]
    assert r["breakdown"]["parameters_bytes"] == 4 * r["param_count"]
    assert (
        sum(v for k, v in r["breakdown"].items() if k != "tensor_peak_bytes")
        == r["breakdown"]["tensor_peak_bytes"]
    )
