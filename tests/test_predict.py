"""The analytic prediction against the measured tensor breakdown, and its refusal to guess."""

from __future__ import annotations

from typing import Any

import pytest

from harness.analysis import predict as pr
from harness.analysis.breakdown import breakdown_step
from harness.models.config import ModelConfig, count_params
from harness.runner.session import open_session
from tests.test_breakdown import make_case

TECHNIQUES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "baseline": [],
    "activation_checkpointing": [("activation_checkpointing", {"every_k_blocks": 1})],
    # Each policy/scope keeps different tensors: each is predicted from its own options.
    "checkpointing_selective": [("activation_checkpointing", {"policy": "selective"})],
    "checkpointing_mlp": [("activation_checkpointing", {"scope": "mlp"})],
    "checkpointing_attention": [("activation_checkpointing", {"scope": "attention"})],
    "checkpointing_every_2": [("activation_checkpointing", {"every_k_blocks": 2})],
    "autocast": [("autocast", {"dtype": "bfloat16"})],
    "sdpa_attention": [("sdpa_attention", {})],
}
SIZES: dict[str, dict[str, Any]] = {
    # Small batches keep the test fast; the formula's terms all scale with the batch.
    "ci": {"batch_size": 4},
    "ci-6x256": {"model": {"n_layers": 6}, "seq_len": 256, "batch_size": 2},
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tech", TECHNIQUES)
def test_measured_tensor_peak_is_within_10_percent_of_the_prediction(tech, size):
    case = make_case(techniques=TECHNIQUES[tech], **SIZES[size])
    predicted = pr.predict(case)
    measured = breakdown_step(open_session(case))
    assert predicted["parameters_bytes"] == measured["parameters_bytes"]
    assert predicted["optimizer_state_bytes"] == measured["optimizer_state_bytes"]
    ratio = measured["tensor_peak_bytes"] / predicted["tensor_peak_bytes"]
    assert 0.9 <= ratio <= 1.1, (tech, size, measured, predicted)


def test_saved_activations_follow_the_published_per_layer_formula():
    # docs/techniques.md: an fp32 explicit-attention GELU layer, d_ff = 4h, keeps about 16*e*sbh + e*a*s^2*b.
    case = make_case(model={"activation": "gelu"})
    shape = pr.shape_for(case)
    assert isinstance(shape, pr.Shape)
    b, s, h, a = 8, 128, 128, 4
    published = 16 * 4 * s * b * h + 4 * a * s * s * b
    extra = s * s + 16 * b * s  # the bool causal mask and four LayerNorm statistics
    assert pr.block_saved_bytes(shape) == published + extra


def test_checkpointing_variants_are_predicted_apart():
    peaks = {t: pr.predict(make_case(techniques=v))["tensor_peak_bytes"] for t, v in TECHNIQUES.items()}
    full = peaks["activation_checkpointing"]
    assert full < peaks["checkpointing_every_2"] < peaks["checkpointing_selective"] < peaks["baseline"]
    assert full < peaks["checkpointing_attention"] < peaks["checkpointing_mlp"] < peaks["baseline"]


def test_techniques_move_the_prediction_in_the_right_direction():
    peak = {t: pr.predict(make_case(techniques=v))["tensor_peak_bytes"] for t, v in TECHNIQUES.items()}
    assert peak["activation_checkpointing"] < peak["autocast"] < peak["baseline"]
    assert peak["sdpa_attention"] < peak["baseline"]
    every2 = pr.predict(make_case(techniques=[("activation_checkpointing", {"every_k_blocks": 2})]))
    saved = {
        k: pr.predict(make_case(techniques=v))["saved_activations_bytes"]
        for k, v in {"all": TECHNIQUES["activation_checkpointing"], "base": []}.items()
    }
    assert saved["all"] < every2["saved_activations_bytes"] < saved["base"]


def test_inference_prediction_is_weights_plus_a_transient():
    case = make_case("infer")
    predicted = pr.predict(case)
    assert predicted["optimizer_state_bytes"] == predicted["gradients_bytes"] == 0
    assert predicted["parameters_bytes"] == 4 * count_params(ModelConfig(**case.model))
    measured = breakdown_step(open_session(case))
    assert 0.9 <= measured["tensor_peak_bytes"] / predicted["tensor_peak_bytes"] <= 1.1


# Rules added for more techniques, each checked at the ci model, batch 8, seq 128 (make_case's defaults).
MORE: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "sgd": [("sgd", {})],
    "sgd_momentum": [("sgd", {"momentum": 0.9})],
    "adamw": [("adamw", {})],
    "adafactor": [("adafactor", {})],
    "adamw_8bit": [("adamw_8bit", {})],
    "gradient_accumulation": [("gradient_accumulation", {"micro_batches": 2})],
    "tied_embeddings": [("tied_embeddings", {})],
    "cross_layer_sharing": [("cross_layer_sharing", {})],
    "pure_bf16": [("pure_bf16", {})],
    "lora": [("lora", {})],
    "bottleneck_adapter": [("bottleneck_adapter", {})],
    "shared_adapter": [("shared_adapter", {})],
    "chunked_cross_entropy": [("chunked_cross_entropy", {"chunks": 4})],
}


@pytest.mark.parametrize("tech", MORE)
def test_more_techniques_measured_within_10_percent_and_persistent_state_exact(tech):
    if tech == "adamw_8bit":
        pytest.importorskip("bitsandbytes")
    case = make_case(techniques=MORE[tech])
    predicted = pr.predict(case)
    measured = breakdown_step(open_session(case))
    assert predicted["parameters_bytes"] == measured["parameters_bytes"]
    assert predicted["optimizer_state_bytes"] == measured["optimizer_state_bytes"]
    ratio = measured["tensor_peak_bytes"] / predicted["tensor_peak_bytes"]
    assert 0.9 <= ratio <= 1.1, (tech, measured, predicted)


def test_optimizer_rules_order_the_state_as_the_optimizers_do():
    state = {t: pr.predict(make_case(techniques=MORE[t]))["optimizer_state_bytes"] for t in MORE}
    base = pr.predict(make_case())["optimizer_state_bytes"]
    assert state["sgd"] == 0
    assert state["sgd_momentum"] == 4 * count_params(ModelConfig(**make_case().model))
    assert state["adamw"] == base
    assert state["adafactor"] < state["adamw_8bit"] < state["sgd_momentum"] < base
    # Frozen base: only the adapters carry state; LoRA's q/v pairs at rank 8: 4 layers x 2 x 2 x 8 x 128.
    assert state["lora"] == 2 * 4 * (4 * 2 * 2 * 8 * 128) + 4 * 16


def test_a_rule_refuses_what_it_does_not_model():
    out = pr.predict(make_case(techniques=[("lora", {"also_train": ["lm_head"]})]))
    assert set(out) == {"prediction_unavailable_reason"}
    assert "lora" in out["prediction_unavailable_reason"]
    torchao = pr.predict(make_case(techniques=[("adamw_8bit", {"backend": "torchao"})]))
    assert "torchao" in torchao["prediction_unavailable_reason"]


def test_an_unknown_technique_makes_the_prediction_unavailable():
    out = pr.predict(make_case(techniques=[("fsdp2", {})]))
    assert set(out) == {"prediction_unavailable_reason"}
    assert "fsdp2" in out["prediction_unavailable_reason"]
