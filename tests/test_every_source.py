"""Every registered technique on a tiny model of every source (transformers' gpt2, llama, mistral, qwen2
and a user's factory module): it runs with finite losses, or it is `unsupported` with a stated reason.
In-process (no case processes), one workload per technique, so the whole matrix stays fast."""

from __future__ import annotations

import math
import textwrap

import pytest

from harness import techniques as techreg
from harness.models.source import UnsupportedModel
from harness.runner.preflight import detect_environment, unsupported_reason
from harness.runner.session import context_for, open_session, techniques_for
from harness.suite.load import load_suite

pytest.importorskip("transformers")

# Tiny configs: 2 layers, width 64, a byte vocabulary; GQA where the family has it.
LLAMA_TINY = (
    "num_hidden_layers: 2, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, "
    "num_key_value_heads: 2, head_dim: 16, vocab_size: 256, max_position_embeddings: 256"
)
SOURCES = {
    "gpt2": "{hf: gpt2, n_layer: 2, n_embd: 64, n_head: 4, vocab_size: 256, n_positions: 256}",
    "llama": "{hf: llama-3.2-1b, " + LLAMA_TINY + "}",
    "mistral": "{hf: mistral-7b, " + LLAMA_TINY + ", sliding_window: 16}",
    "qwen2": "{hf: qwen2.5-0.5b, " + LLAMA_TINY.replace("head_dim: 16, ", "") + "}",
    "factory": '{factory: "harness.models.example_factory:build", kwargs: {width: 64}, max_seq_len: 256}',
}
SUITE = """\
version: 1
defaults: {{warmup_steps: 0, measured_steps: 2, data: random, reference_steps: 0}}
models:
  m: {model}
workloads:
  w: {{kind: {kind}, batch_size: 2, seq_len: 16}}
techniques:
  t: [{name}]
matrix: {{model: [m], workload: [w], techniques: [t]}}
"""


def kinds_for(cls: type[techreg.Technique]) -> list[str]:
    # Inference only where the technique rewrites the model (STEP/OPTIMIZER ones act on training).
    kinds = {"train", "infer"} if cls.workloads is None else set(cls.workloads) & {"train", "infer"}
    if cls.phase > techreg.Phase.WRAP:
        kinds.discard("infer")
    return sorted(kinds)


@pytest.fixture(autouse=True)
def one_thread():
    # Two intra-op threads on a loaded 2-core machine turn a 0.1 s tiny step into seconds.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CASES = [(s, n, k) for s in SOURCES for n in techreg.names() for k in kinds_for(techreg.get(n))]


@pytest.mark.parametrize("source,name,kind", CASES, ids=["-".join(c) for c in CASES])
def test_every_technique_runs_on_every_source_or_says_why_not(source, name, kind, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE.format(model=SOURCES[source], kind=kind, name=name)))
    (case,) = load_suite(path).cases
    reason = unsupported_reason(case, detect_environment())
    if reason is not None:
        assert len(reason) > 15, reason  # a stated reason, not a shrug
        return
    if any(t.launch_ranks(context_for(case)) > 1 for t in techniques_for(case)):
        pytest.skip("multi-rank: runs through torchrun in the case process (tests/test_multirank.py)")
    try:
        session = open_session(case)
    except UnsupportedModel as e:  # known only once built; the case process records `unsupported`
        assert len(str(e)) > 15
        return
    losses = [session.step(i) for i in range(2)]
    assert all(math.isfinite(x) for x in losses), losses


@pytest.mark.parametrize(
    "kv_heads,heads_kept,kv_kept",
    [(2, 2, 2), (4, 3, 3)],  # GQA 2:1 -> one query head off each group; MHA -> whole heads (K/V too)
)
def test_structured_pruning_is_gqa_aware_on_llama_blocks(kv_heads, heads_kept, kv_kept, tmp_path):
    fraction = 0.5 if kv_heads == 2 else 0.25
    model = SOURCES["llama"].replace("num_key_value_heads: 2", f"num_key_value_heads: {kv_heads}")
    tech = f"[{{structured_pruning: {{heads_fraction: {fraction}, ffn_fraction: 0.25}}}}]"
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE.format(model=model, kind="train", name=tech[1:-1])))
    (case,) = load_suite(path).cases
    session = open_session(case)
    for layer in session.model.hf.model.layers:
        attn = layer.self_attn
        assert attn.q_proj.out_features == heads_kept * attn.head_dim
        assert attn.k_proj.out_features == attn.v_proj.out_features == kv_kept * attn.head_dim
        assert attn.num_key_value_groups == heads_kept // kv_kept
        assert layer.mlp.gate_proj.out_features == layer.mlp.up_proj.out_features == 96  # 128 - 32
    assert math.isfinite(session.step(0))
