"""The quality protocol: paired differences to a baseline over the same held-out batches, with bootstrap
intervals; a difference inside its interval is labelled, not ranked."""

from __future__ import annotations

import copy

import pytest
import torch

from harness import corpus as corpus_mod
from harness.analysis.pairing import (
    NO_CHANGE,
    baseline_differences,
    bootstrap_mean_interval,
    paired_difference,
    quality_vs_baseline,
)
from harness.analysis.quality import compare_models, heldout_loss
from harness.corpus import corpus_batches, load_corpus, reference_model
from harness.models.config import SIZES
from harness.models.transformer import Transformer
from harness.techniques.unstructured_pruning import zero_smallest

CAP = 256 * 1024


def test_bootstrap_interval_is_deterministic_and_holds_the_mean() -> None:
    values = [0.1, 0.3, -0.2, 0.25, 0.05, 0.15]
    mean, low, high = bootstrap_mean_interval(values)
    assert (mean, low, high) == bootstrap_mean_interval(values)
    assert low < mean < high
    assert min(values) <= low and high <= max(values)


def test_inside_the_interval_is_no_measurable_change() -> None:
    assert paired_difference([3.0, 3.1, 2.9], [3.05, 3.0, 2.95])["quality_change"] == NO_CHANGE
    worse = paired_difference([3.5, 3.6, 3.4, 3.55], [3.0, 3.1, 2.9, 3.0])
    assert worse["quality_change"] == "higher"
    assert worse["quality_delta_ci_low_nats"] > 0
    one = paired_difference([3.5], [3.0])  # one batch: no interval, so nothing to rank by
    assert one["quality_change"] == NO_CHANGE


def test_training_case_is_paired_with_its_baseline_record_on_the_same_draw() -> None:
    draw = {"seed": 0, "batches": 3}
    base = {
        "status": "ok",
        "techniques": [],
        "heldout_loss_per_batch_nats": [3.0, 3.1, 2.9],
        "heldout_draw": draw,
    }
    case = {"status": "ok", "techniques": ["lora"], "heldout_loss_per_batch_nats": [3.4, 3.5, 3.3]}
    assert quality_vs_baseline({**case, "heldout_draw": draw}, base)["quality_change"] == "higher"
    other = quality_vs_baseline({**case, "heldout_draw": {"seed": 1, "batches": 3}}, base)
    assert "other held-out batches" in other["quality_delta_unavailable_reason"]


def test_multi_rank_case_states_what_differs_from_its_baseline() -> None:
    base = {"techniques": [], "batch_size": 8}
    zero = {"techniques": ["zero1"], "batch_size": 8, "world_size": 2, "host_memory_scope": "max over ranks"}
    out = baseline_differences(zero, base)
    assert out["baseline_ratios_comparable"] is False
    assert "ranks: 2 vs baseline 1" in out["baseline_differences"]
    assert "per-rank batch: 4 vs baseline 8" in out["baseline_differences"]
    assert "per-rank batch" in out["baseline_ratio_null_reason"]
    same = baseline_differences({"techniques": ["lora"], "batch_size": 8}, base)
    assert same == {"baseline_differences": [], "baseline_ratios_comparable": True}


@pytest.fixture
def trained(tmp_path, monkeypatch) -> tuple[torch.nn.Module, corpus_mod.Corpus]:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    corpus_mod._load_corpus.cache_clear()
    corpus = load_corpus(CAP)
    cfg = SIZES["ci"]
    model = Transformer(cfg)
    model.load_state_dict(reference_model(cfg, corpus, 10, seed=0))
    return model.eval(), corpus


def _pruned(model: torch.nn.Module, amount: float) -> torch.nn.Module:
    out = copy.deepcopy(model)
    weights = [m.weight for m in out.modules() if isinstance(m, torch.nn.Linear)]
    for w in weights:
        zero_smallest([w], amount)
    return out


def test_two_held_out_draws_agree_within_their_intervals(trained) -> None:
    """The same comparison on two independent draws of held-out batches: the paired differences (and
    KL) agree within their intervals, and a change the batches cannot resolve is labelled so."""
    model, corpus = trained
    case = _pruned(model, 0.3)
    results = []
    for seed in (11, 12):
        batches = corpus_batches(8, 4, 64, "heldout", seed, corpus)
        ours = heldout_loss(case, batches)["heldout_loss_per_batch_nats"]
        theirs = heldout_loss(model, batches)["heldout_loss_per_batch_nats"]
        results.append({**paired_difference(ours, theirs), **compare_models(case, model, batches)})
    a, b = results
    for key, stem in (("quality_delta_nats", "quality_delta"), ("kl_divergence_nats", "kl_divergence")):
        half = sum(r[f"{stem}_ci_high_nats"] - r[f"{stem}_ci_low_nats"] for r in results) / 2
        assert abs(a[key] - b[key]) <= half, (key, a, b)
    # The fp32 model against itself: zero difference, no measurable change, KL 0, top-1 1.
    batches = corpus_batches(4, 4, 64, "heldout", 11, corpus)
    same = heldout_loss(model, batches)["heldout_loss_per_batch_nats"]
    assert paired_difference(same, same)["quality_change"] == NO_CHANGE
    self_cmp = compare_models(model, model, batches)
    assert self_cmp["top1_agreement_ci_low_fraction"] == 1.0


def test_a_diverged_model_has_no_quality_verdict_but_a_reason() -> None:
    """A loss that went to NaN (sgd at lr 1e30) is no "no measurable change": the verdict is absent and
    the reason says whose loss is not finite."""
    nan, inf = float("nan"), float("inf")
    out = paired_difference([5.5, nan, 5.4], [5.5, 5.6, 5.4])
    assert "quality_change" not in out and "quality_delta_nats" not in out
    assert out["quality_delta_unavailable_reason"] == "the case's held-out loss is not finite (diverged)"
    out = paired_difference([5.5, 5.6], [inf, 5.6])
    assert out["quality_delta_unavailable_reason"] == "the baseline's held-out loss is not finite (diverged)"
    assert paired_difference([5.5, 5.6], [5.5, 5.6])["quality_change"] == "no measurable change"
