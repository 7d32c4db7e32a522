"""Exact techniques are checked against their baseline's losses; a broken one is flagged."""

from __future__ import annotations

import pytest

from harness.runner import exactness


def rec(techniques, loss, status="ok", **spec):
    base_spec = {"model": {"n_layers": 2}, "workload": {"kind": "train"}, "batch_size": 2, "seq_len": 8}
    return {"techniques": techniques, "loss": loss, "status": status, "spec": {**base_spec, **spec}}


def test_equal_losses_are_ok():
    base = rec([], [5.0, 4.9, 4.8])
    out = exactness.check(rec(["activation_checkpointing"], [5.0, 4.9, 4.8]), base)
    assert out == {"loss_max_rel_diff_vs_baseline": 0.0, "exact_rtol": 1e-5, "exactness": "ok"}


def test_an_artificially_broken_exact_technique_is_flagged():
    base = rec([], [5.0, 4.9, 4.8])
    broken = rec(["activation_checkpointing"], [5.0, 4.9, 4.8 * (1 + 3e-5)])  # drifts past 1e-5
    out = exactness.check(broken, base)
    assert out["exactness"] == "drift"
    assert out["loss_max_rel_diff_vs_baseline"] == pytest.approx(3e-5, rel=1e-6)


def test_the_loosest_declared_tolerance_applies():
    # sdpa_attention declares 1e-4 (another summation order); combined with checkpointing, 1e-4 rules.
    base = rec([], [5.0, 4.9])
    out = exactness.check(rec(["activation_checkpointing", "sdpa_attention"], [5.0, 4.9 * (1 + 5e-5)]), base)
    assert out["exact_rtol"] == 1e-4 and out["exactness"] == "ok"


def test_inexact_techniques_and_failed_cases_are_not_judged():
    base = rec([], [5.0])
    assert exactness.check(rec(["autocast"], [5.1]), base) == {}
    assert exactness.check(rec(["activation_checkpointing"], [5.0], status="oom"), base) == {}
    assert exactness.check(rec(["activation_checkpointing"], [5.0]), None) == {}


def test_baseline_key_ignores_the_combination_and_run_settings_only():
    a = rec([], [1.0], techniques_name="baseline", timeout_s=5)["spec"]
    b = rec([], [1.0], techniques_name="ckpt", timeout_s=50)["spec"]
    c = rec([], [1.0], seq_len=16)["spec"]
    assert exactness.baseline_key(a) == exactness.baseline_key(b) != exactness.baseline_key(c)


@pytest.mark.parametrize(
    ("ours", "flagged"),
    [(20_000_000 + 2 * (1 << 20), True), (20_000_000 + (1 << 20), False), (15_000_000, False)],
    ids=["2-MiB-above", "within-noise", "a-saving"],
)
def test_an_exact_technique_costing_memory_beyond_noise_is_flagged(ours, flagged):
    base = {**rec([], [5.0, 4.9]), "breakdown": {"tensor_peak_bytes": 20_000_000}}
    case = {**rec(["activation_checkpointing"], [5.0, 4.9]), "breakdown": {"tensor_peak_bytes": ours}}
    out = exactness.check(case, base)
    assert out["exactness"] == "ok"
    assert ("negative_saving_flag" in out) == flagged
    if flagged:
        assert "above the baseline's 20000000" in out["negative_saving_flag"]
