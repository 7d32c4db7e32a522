"""The analytic memory model on transformers' shapes (SwiGLU, RMSNorm, rotary, GQA, GPT-2's fused
q/k/v and Python GELU): parameters and optimizer state exact, the measured tensor peak within 10 % of
the prediction, on shapes other than those the terms were derived on."""

from __future__ import annotations

import textwrap

import pytest

from harness.analysis import predict as pr
from harness.analysis.breakdown import breakdown_step
from harness.runner.session import open_session
from harness.suite.load import load_suite

pytest.importorskip("transformers")

SUITE = """\
version: 1
defaults: {{warmup_steps: 0, measured_steps: 1, data: random, reference_steps: 0}}
models:
  m: {model}
workloads:
  w: {{kind: {kind}, batch_size: 3, seq_len: 96}}
techniques:
  t: {techniques}
matrix: {{model: [m], workload: [w], techniques: [t]}}
"""
MODELS = {
    # GQA 4:1 with a sliding window wider than the sequence.
    "mistral": "{hf: mistral-7b, num_hidden_layers: 3, hidden_size: 96, intermediate_size: 320,"
    " num_attention_heads: 8, num_key_value_heads: 2, head_dim: 12, vocab_size: 384,"
    " max_position_embeddings: 256}",
    # q/k/v biases, GQA 3:1, tied head.
    "qwen2": "{hf: qwen2.5-0.5b, num_hidden_layers: 2, hidden_size: 144, intermediate_size: 256,"
    " num_attention_heads: 6, num_key_value_heads: 2, vocab_size: 300, max_position_embeddings: 256}",
    "gpt2": "{hf: gpt2, n_layer: 3, n_embd: 96, n_head: 3, vocab_size: 320, n_positions: 256}",
}
CASES = [
    ("mistral", "train", "[]"),
    ("mistral", "train", "[activation_checkpointing]"),
    ("qwen2", "train", "[sdpa_attention]"),
    ("qwen2", "infer", "[]"),
    ("mistral", "train", "[pure_bf16]"),  # RMSNorm and softmax in fp32 inside a bf16 model
    ("gpt2", "train", "[]"),
    # inference: what a transformers layer holds while its MLP runs (eager weights, mask, residual)
    ("gpt2", "infer", "[]"),
    ("mistral", "infer", "[]"),
    ("mistral", "infer", "[sdpa_attention]"),
]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("model,kind,techniques", CASES, ids=["-".join(c) for c in CASES])
def test_measured_over_predicted_within_10_percent(model, kind, techniques, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE.format(model=MODELS[model], kind=kind, techniques=techniques)))
    (case,) = load_suite(path).cases
    predicted = pr.predict(case)
    measured = breakdown_step(open_session(case))
    assert predicted["parameters_bytes"] == measured["parameters_bytes"]
    assert predicted["optimizer_state_bytes"] == measured["optimizer_state_bytes"]
    ratio = measured["tensor_peak_bytes"] / predicted["tensor_peak_bytes"]
    assert 0.9 <= ratio <= 1.1, (ratio, measured, predicted)


def test_gqa_shrinks_the_predicted_k_v_projections_exactly(tmp_path):
    def params(kv_heads: int) -> int:
        model = MODELS["mistral"].replace("num_key_value_heads: 2", f"num_key_value_heads: {kv_heads}")
        path = tmp_path / f"s{kv_heads}.yaml"
        path.write_text(textwrap.dedent(SUITE.format(model=model, kind="train", techniques="[]")))
        (case,) = load_suite(path).cases
        return int(pr.predict(case)["parameters_bytes"])

    # K and V: 2 x d_model x (kv_heads x head_dim) weights per layer, 4 bytes each, 3 layers.
    assert params(8) - params(2) == 3 * 2 * 96 * (8 - 2) * 12 * 4


def test_a_factory_module_has_no_formula_and_says_why(tmp_path):
    model = '{factory: "harness.models.example_factory:build"}'
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE.format(model=model, kind="train", techniques="[]")))
    (case,) = load_suite(path).cases
    assert "factory module's shapes are its own" in pr.predict(case)["prediction_unavailable_reason"]
