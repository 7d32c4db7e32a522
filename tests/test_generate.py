"""Generation with a KV cache: the cache is exact, the cache techniques change its bytes by the factors
they promise (exactly), and the generate workload reports its figures, on the built-in model and on a
transformers Llama built from its config."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from harness import metrics
from harness import techniques as techreg
from harness.analysis.predict import predict
from harness.errors import SuiteError
from harness.metrics.record import flatten
from harness.models.config import SIZES
from harness.models.decoding import decoder_for
from harness.models.kv_cache import CacheSpec, dequantize, quantize
from harness.models.transformer import Transformer
from harness.runner.preflight import detect_environment, unsupported_reason
from harness.runner.session import open_session
from harness.suite.load import load_suite
from harness.techniques.base import Context, StepPlan
from harness.techniques.grouped_query_attention import GroupedQueryAttention
from harness.workloads.generate import GenerateSession, cache_spec, generate
from harness.workloads.train import plain_loss
from tests.conftest import run_cli

PLAN = StepPlan(loss_fn=plain_loss)
CTX = Context(device="cpu", dtype="float32", workload="generate", batch_size=2, seq_len=20, seed=0)
NEW = 8


def builtin(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return Transformer(SIZES["ci"].replace(n_layers=2)).to(dtype).eval()  # 4 heads of 32


def llama(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(dtype).eval()  # 8 heads of 8


def prompt() -> torch.Tensor:
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def recomputed(model: torch.nn.Module, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy tokens by running the whole sequence again for every token: no cache at all."""
    with torch.inference_mode():
        for _ in range(n):
            out = model(ids)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, -n:]


def kv_bytes(model: torch.nn.Module, spec: CacheSpec | None = None) -> int:
    g = generate(decoder_for(model), prompt(), spec or CacheSpec(), NEW, PLAN, record=True)
    return int(g.timeline["kv_cache_bytes"][-1])


EXACT_SPECS = [
    CacheSpec(),
    CacheSpec(storage="static"),
    CacheSpec(window=64),  # a window longer than the sequence forgets nothing
    CacheSpec(storage="static", window=64),
]


@pytest.mark.parametrize("make", [builtin, llama], ids=["builtin", "llama"])
@pytest.mark.parametrize("spec", EXACT_SPECS, ids=lambda s: f"{s.storage}-w{s.window}")
def test_cached_greedy_tokens_equal_full_recomputation(make, spec):
    model = make()
    g = generate(decoder_for(model), prompt(), spec, NEW, PLAN)
    assert torch.equal(g.tokens, recomputed(model, prompt(), NEW))


class Wrapped(torch.nn.Module):
    """How harness holds a transformers model (models/hf_build.py): the model under `.hf`."""

    def __init__(self, hf: torch.nn.Module) -> None:
        super().__init__()
        self.hf = hf


def test_generation_reaches_a_wrapped_transformers_model_and_refuses_other_modules():
    inner = llama()
    g = generate(decoder_for(Wrapped(inner)), prompt(), CacheSpec(), NEW, PLAN)
    assert torch.equal(g.tokens, recomputed(inner, prompt(), NEW))
    with pytest.raises(TypeError, match="generate needs a model with a KV cache path"):
        decoder_for(torch.nn.Linear(2, 2))


def test_builtin_cache_logits_match_recomputation_closely():
    model = builtin()
    ids = prompt()
    ref = recomputed(model, ids, NEW)
    g = generate(decoder_for(model), ids, CacheSpec(), NEW, PLAN, forced=ref, keep_logits=True)
    with torch.inference_mode():
        full = model(torch.cat([ids, ref[:, :-1]], dim=1))[:, ids.size(1) - 1 :]
    torch.testing.assert_close(g.logits, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make,kv_heads", [(builtin, 1), (llama, 2)], ids=["builtin-mqa", "llama-gqa"])
def test_gqa_with_a_quarter_of_the_kv_heads_stores_exactly_a_quarter(make, kv_heads):
    base = kv_bytes(make())
    model = GroupedQueryAttention(GroupedQueryAttention.Config(kv_heads=kv_heads)).transform_model(
        make(), CTX
    )
    assert decoder_for(model).layout.kv_heads == kv_heads
    assert kv_bytes(model) * 4 == base
    assert kv_bytes(model, CacheSpec(storage="static")) * 4 == base


def test_gqa_pools_heads_in_consecutive_groups_and_drops_exactly_their_rows():
    model = builtin()
    attn = model.blocks[0].attn
    k = attn.k_proj.weight.detach().clone().view(4, 32, -1)  # (heads, hs, d)
    params = sum(p.numel() for p in model.parameters())
    GroupedQueryAttention(GroupedQueryAttention.Config(kv_heads=2)).transform_model(model, CTX)
    torch.testing.assert_close(attn.k_proj.weight.view(2, 32, -1)[1], k[2:].mean(0))
    removed = 2 * 2 * (4 - 2) * 32 * (128 + 1)  # layers x (k, v) x removed heads x hs x (d + bias)
    assert params - sum(p.numel() for p in model.parameters()) == removed
    assert torch.isfinite(recomputed(model, prompt(), 2).float()).all()


def test_gqa_refuses_a_kv_head_count_that_does_not_divide():
    with pytest.raises(ValueError, match="kv_heads 3 does not divide the model's 4 K/V heads"):
        GroupedQueryAttention(GroupedQueryAttention.Config(kv_heads=3)).transform_model(builtin(), CTX)


@pytest.mark.parametrize("make,hs", [(builtin, 32), (llama, 8)], ids=["builtin", "llama"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_int8_kv_cache_stores_one_byte_per_element_plus_one_scale_per_head_and_token(make, hs, dtype):
    # bf16: (hs + 2) / (2 hs), about 1/2 (0.531 at hs 32); fp32: (hs + 4) / (4 hs), about 1/4.
    w = torch.finfo(dtype).bits // 8
    base = kv_bytes(make(dtype))
    assert kv_bytes(make(dtype), CacheSpec(bits=8)) * w * hs == base * (hs + w)
    assert kv_bytes(make(dtype), CacheSpec(bits=4)) * 2 * w * hs == base * (hs + 2 * w)


def test_quantize_round_trip_error_is_within_half_a_step():
    x = torch.randn(2, 3, 5, 32)
    for bits, qmax in ((8, 127), (4, 7)):
        codes, scale = quantize(x, bits, 16)
        back = dequantize(codes, scale, bits, x.dtype)
        step = x.view(2, 3, 5, 2, 16).abs().amax(-1, keepdim=True) / qmax
        assert ((back - x).view(2, 3, 5, 2, 16).abs() <= step / 2 + 1e-6).all()


def test_sliding_window_keeps_window_tokens_and_changes_the_output_once_it_forgets():
    model = builtin()
    assert kv_bytes(model, CacheSpec(window=6)) * (12 + NEW - 1) == kv_bytes(model) * 6
    short = generate(decoder_for(model), prompt(), CacheSpec(window=6), NEW, PLAN)
    ring = generate(decoder_for(model), prompt(), CacheSpec(storage="static", window=6), NEW, PLAN)
    assert torch.equal(short.tokens, ring.tokens)  # a ring buffer and a trimmed tensor attend alike


# ---- the workload, in process and as a real case --------------------------------------------------

SUITE = """\
version: 1
defaults: {{warmup_steps: 1, measured_steps: 2, data: random, reference_steps: 0, heldout_batches: 1,
           breakdown: false, timeout_s: 120}}
models:
  tiny: {{size: ci, n_layers: 2}}
workloads:
  gen: {{kind: generate, batch_size: 2, prompt_len: 24, new_tokens: 8}}
  train: {{kind: train, batch_size: 2, seq_len: 16}}
techniques:
  baseline: []
  mqa: [{{grouped_query_attention: {{kv_heads: 1}}}}]
  kv8: [{{kv_cache_quantization: {{bits: 8}}}}]
  kv4: [{{kv_cache_quantization: {{bits: 4}}}}]
matrix: {{model: [tiny], workload: [{workload}], techniques: [{techniques}]}}
"""


def cases(tmp_path, workload="gen", techniques="baseline, mqa, kv8, kv4"):
    path = tmp_path / "g.yaml"
    path.write_text(SUITE.format(workload=workload, techniques=techniques))
    return {c.techniques_name: c for c in load_suite(path).cases}


def test_generate_session_reports_latency_throughput_kv_bytes_and_quality(tmp_path):
    by = cases(tmp_path)
    figures = {}
    for name, case in by.items():
        session = open_session(case)
        assert isinstance(session, GenerateSession)
        losses = [session.step(i) for i in range(3)]
        assert all(loss > 0 for loss in losses)
        figures[name] = {**session.extra_metrics(), **session.quality_metrics()}
        param_bytes = sum(p.numel() * p.element_size() for p in session.model.parameters())
        assert predict(case)["parameters_bytes"] == param_bytes, name  # GQA's pooled K/V rows too
    base = figures["baseline"]
    assert base["generate_prefill_time_s_median"] > 0
    assert base["generate_decode_token_latency_s_median"] > 0
    assert base["generate_decode_token_latency_s_iqr"] >= 0
    assert base["generate_new_tokens_per_s"] > 0
    assert base["kl_divergence_nats"] == 0.0  # the same model, cache and dtype as the reference
    assert base["top1_agreement_fraction"] == 1.0
    timeline = base["generate_memory_by_length"]
    assert timeline["tokens_count"] == list(range(24, 32))
    assert timeline["kv_cache_bytes"] == sorted(timeline["kv_cache_bytes"])  # a dynamic cache grows
    for name, f in figures.items():
        assert f["kv_cache_bytes"] == f["kv_cache_analytic_bytes"] == predict(by[name])["kv_cache_bytes"], (
            name
        )
        assert f["kv_cache_mismatch_reason"] is None, name
    assert figures["mqa"]["kv_cache_bytes"] * 4 == base["kv_cache_bytes"]
    assert figures["kv4"]["kl_divergence_nats"] > figures["kv8"]["kl_divergence_nats"] > 0
    # intervals over the generated sequences: around the mean, a point for the reference's own model
    assert base["kl_divergence_ci_low_nats"] == base["kl_divergence_ci_high_nats"] == 0.0
    kv4 = figures["kv4"]
    assert kv4["kl_divergence_ci_low_nats"] <= kv4["kl_divergence_nats"] <= kv4["kl_divergence_ci_high_nats"]
    assert kv4["kl_divergence_ci_high_nats"] > kv4["kl_divergence_ci_low_nats"] > 0  # sequences differ
    assert kv4["top1_agreement_ci_low_fraction"] <= kv4["top1_agreement_fraction"] <= 1.0


def test_cache_techniques_are_unsupported_outside_generate(tmp_path):
    (case,) = cases(tmp_path, workload="train", techniques="kv8").values()
    reason = unsupported_reason(case, detect_environment())
    assert reason is not None and "generate" in reason


def test_seq_len_on_a_generate_workload_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        SUITE.format(workload="gen", techniques="baseline").replace(
            "new_tokens: 8}", "new_tokens: 8, seq_len: 9}"
        )
    )
    with pytest.raises(
        SuiteError, match=r"workloads\.gen: seq_len of a generate workload .*prompt_len and new_tokens"
    ):
        load_suite(path)
    # A bad cache names its key and the choices, not pydantic's "value error" and the whole mapping.
    path.write_text(
        SUITE.format(workload="gen", techniques="baseline").replace(
            "new_tokens: 8}", "new_tokens: 8, cache: bogus}"
        )
    )
    with pytest.raises(
        SuiteError, match=r"workloads\.gen\.cache: 'bogus' is not allowed; expected 'dynamic' or 'static'$"
    ):
        load_suite(path)


def test_a_generate_case_runs_end_to_end_with_its_figures_in_the_record(tmp_path):
    suite = tmp_path / "run.yaml"
    suite.write_text(textwrap.dedent(SUITE.format(workload="gen", techniques="baseline, kv8")))
    proc = run_cli("run", str(suite), "--results", str(tmp_path / "res"))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in (tmp_path / "res").iterdir() if p.is_dir()]
    recs = {
        r["techniques_name"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())
    }
    for r in recs.values():
        assert r["status"] == "ok", r.get("error")
        assert r["generate_decode_token_latency_s_median"] > 0 and r["generate_new_tokens_per_s"] > 0
        assert r["tokens_per_step"] == 2 * 8  # new tokens only
        assert len(r["generate_memory_by_length"]["host_rss_bytes"]) == 8
        assert 0 <= r["top1_agreement_fraction"] <= 1
    assert recs["kv8"]["kv_cache_bytes"] * 4 * 32 == recs["baseline"]["kv_cache_bytes"] * (32 + 4)
    keys = {k for r in recs.values() for k in flatten(r)}
    assert sorted(k for k in keys if metrics.lookup(k) is None) == []  # every figure is in the catalog


def test_cache_techniques_compose_into_one_cache_spec():
    techs = techreg.compose(
        [
            ("kv_cache_quantization", {"bits": 4, "group_size": 16}),
            ("sliding_window_cache", {"window": 6}),
            ("static_cache", {}),
        ]
    )
    assert cache_spec(CacheSpec(), techs, CTX) == CacheSpec(storage="static", window=6, bits=4, group_size=16)
    model = builtin()
    g = generate(decoder_for(model), prompt(), cache_spec(CacheSpec(), techs, CTX), NEW, PLAN, record=True)
    # A static ring of 6 slots: int4 codes (16 bytes per head and token) and 2 fp32 scales each.
    assert g.timeline["kv_cache_bytes"][-1] == 2 * 2 * 2 * 4 * 6 * (16 + 2 * 4)  # layers, k/v, batch, heads


def test_a_cache_that_holds_other_than_its_layout_says_is_named() -> None:
    """transformers' sliding-window layer at window 1 kept every token (now unsupported there): whatever
    does that next, the record says the two figures disagree instead of printing both."""
    from harness.workloads.generate import _mismatch

    assert _mismatch(5632, 512) == (
        "the cache holds 5632 bytes, its layout says 512: it keeps other than the settings ask "
        "(a library cache that ignores one?)"
    )
    assert _mismatch(1024, 1024) is None and _mismatch(1030, 1024) is None  # within 1 %


def test_a_static_cache_keeps_what_the_dynamic_baseline_keeps_on_a_windowed_config(write_suite, tmp_path):
    """A Mistral config's own sliding_window must not window only the static side of a pair: it did
    (StaticCache(config=...)), and static read 16384 bytes against the baseline's 48128."""
    suite = write_suite(
        """\
        version: 1
        defaults: {warmup_steps: 1, measured_steps: 1, reference_steps: 0, quality: false, timing_pass: false,
                   breakdown: false}
        models:
          mistral: {hf: mistral-7b, num_hidden_layers: 1, hidden_size: 64, intermediate_size: 64,
                    num_attention_heads: 4, num_key_value_heads: 4, head_dim: 16, vocab_size: 256,
                    max_position_embeddings: 64, sliding_window: 16}
        workloads: {gen: {kind: generate, batch_size: 2, prompt_len: 40, new_tokens: 8}}
        techniques: {baseline: [], static: [static_cache]}
        matrix: {model: [mistral], workload: [gen], techniques: [baseline, static]}
        """
    )
    proc = run_cli("run", str(suite), "--results", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "r").iterdir()
    recs = {r["techniques_name"]: r for r in map(json.loads, (run / "results.jsonl").open())}
    for name, r in recs.items():
        assert r["kv_cache_bytes"] == r["kv_cache_analytic_bytes"] == 2 * 4 * 16 * 47 * 2 * 4, name
        assert r["kv_cache_mismatch_reason"] is None, name
