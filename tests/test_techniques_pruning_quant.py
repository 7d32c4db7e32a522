"""Pruning and quantization techniques: their effect on the model's bytes, counts and values (ci size, CPU).

Each case is built in-process from a suite written to tmp_path, the way the case process builds it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn
from torch.nn.utils import prune

from harness import techniques as techreg
from harness.case import CaseSpec
from harness.errors import SuiteError
from harness.models.config import ModelConfig, count_params
from harness.models.transformer import CausalSelfAttention, FeedForward
from harness.runner.session import context_for, open_session, techniques_for
from harness.suite.load import load_suite
from harness.techniques import _util
from harness.techniques._sparse_linear import SparseLinear
from harness.techniques._straight_through import fake_quantize
from harness.techniques.base import Environment
from harness.techniques.structured_pruning import head_scores, neuron_scores
from harness.techniques.unstructured_pruning import UnstructuredPruning, zero_smallest
from harness.workloads.base import Session

CPU = Environment(cuda_available=False)


def make_case(
    tmp_path: Path, techniques: list[Any], kind: str = "train", steps: int = 2, dtype: str = "float32"
) -> CaseSpec:
    suite = {
        "version": 1,
        "defaults": {"warmup_steps": 0, "measured_steps": steps, "dtype": dtype},
        "models": {"ci": {"size": "ci"}},
        "workloads": {"w": {"kind": kind, "batch_size": 2, "seq_len": 32}},
        "techniques": {"t": techniques},
        "matrix": {"model": ["ci"], "workload": ["w"], "techniques": ["t"]},
    }
    path = tmp_path / f"suite-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(suite))
    (case,) = load_suite(path).cases
    return case


def run(
    tmp_path: Path, techniques: list[Any], kind: str = "train", steps: int = 2, dtype: str = "float32"
) -> tuple[Session, dict[str, Any], list[float]]:
    """Build the case, run its steps (each loss finite); return the session, techniques and losses."""
    case = make_case(tmp_path, techniques, kind, steps, dtype)
    techs = techniques_for(case)
    for t in techs:
        assert t.unsupported_reason(CPU, context_for(case)) is None
    session = open_session(case)
    losses = [session.step(i) for i in range(steps)]
    assert all(math.isfinite(x) for x in losses), losses
    return session, {t.name: t for t in techs}, losses


def linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in _util.target_linears(model, include_lm_head=True)}


# ---- unstructured pruning ----------------------------------------------------------------------------


def test_masks_raise_parameter_and_buffer_bytes(tmp_path: Path) -> None:
    base, _, _ = run(tmp_path, [], kind="infer", steps=1)
    pruned, techs, _ = run(tmp_path, [{"unstructured_pruning": {"storage": "masks"}}], kind="infer", steps=1)
    dense = sum(w.numel() * 4 for w in linear_weights(base.model).values())
    p0, b0 = _util.state_bytes(base.model)
    p1, b1 = _util.state_bytes(pruned.model)
    # weight_orig replaces weight (same bytes); weight_mask (same dtype) is new: +1x of the weights.
    assert p1 == p0
    assert b1 == b0 + dense
    m = techs["unstructured_pruning"].metrics(pruned.model)
    # weight_orig + weight_mask + the recomputed weight held on the module: 3x.
    assert m["weight_storage_bytes"] == 3 * m["dense_weight_bytes"] == 3 * dense


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_dense_storage_keeps_bytes_and_reaches_the_sparsity(tmp_path: Path, scope: str) -> None:
    base, _, _ = run(tmp_path, [], steps=1)
    opts = {"sparsity": 0.3, "scope": scope, "storage": "dense"}
    pruned, techs, _ = run(tmp_path, [{"unstructured_pruning": opts}], steps=3)
    assert _util.state_bytes(pruned.model) == _util.state_bytes(base.model)
    weights = linear_weights(pruned.model)
    zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
    if scope == "per_layer":
        for n, w in weights.items():
            assert abs(zeros[n] - 0.3 * w.numel()) <= 1, n
    else:
        total = sum(w.numel() for w in weights.values())
        assert abs(sum(zeros.values()) - 0.3 * total) <= 1
        assert (
            len({round(zeros[n] / weights[n].numel(), 3) for n in weights}) > 1
        )  # one threshold, not per layer
    m = techs["unstructured_pruning"].metrics(pruned.model)
    assert abs(m["sparsity_fraction"] - 0.3) <= len(weights) / m["targeted_weight_count"]
    assert m["weight_storage_bytes"] == m["dense_weight_bytes"]


def test_in_place_pruning_matches_torch_prune_and_counts_ties_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 48, generator=gen), torch.randn(32, 64, generator=gen)
    ref = [nn.Linear(48, 64), nn.Linear(64, 32)]
    for layer, w in zip(ref, (a, b), strict=True):
        layer.weight.data.copy_(w)
    prune.global_unstructured([(m, "weight") for m in ref], pruning_method=prune.L1Unstructured, amount=0.37)
    mine = [a.clone(), b.clone()]
    zero_smallest(mine, 0.37)
    for layer, w in zip(ref, mine, strict=True):
        assert torch.equal(layer.weight, w)
    # bf16 of a narrow range: most values are repeated; the count is still exact.
    tied = (torch.randn(100, 100, generator=gen) * 0.01).to(torch.bfloat16)
    assert len(torch.unique(tied)) < 2000
    zero_smallest([tied], 0.5)
    assert int((tied == 0).sum()) == 5000


def test_training_keeps_pruned_weights_at_zero(tmp_path: Path) -> None:
    """Three AdamW steps: the zero pattern is unchanged, the other weights did move."""
    case = make_case(tmp_path, [{"unstructured_pruning": {"sparsity": 0.5}}], steps=3)
    session = open_session(case)
    before = {n: w.clone() for n, w in linear_weights(session.model).items()}
    for i in range(3):
        assert math.isfinite(session.step(i))
    after = linear_weights(session.model)
    for n, w in after.items():
        assert torch.equal(w == 0, before[n] == 0), n
        assert not torch.equal(w, before[n]), n


def test_sparse_storage_where_it_pays(tmp_path: Path) -> None:
    dense, _, dense_losses = run(tmp_path, [{"unstructured_pruning": {"sparsity": 0.9}}], kind="infer")
    opts = {"sparsity": 0.9, "storage": "sparse", "sparse_index_dtype": "int32"}
    sparse, techs, sparse_losses = run(tmp_path, [{"unstructured_pruning": opts}], kind="infer")
    layers = [m for m in sparse.model.modules() if isinstance(m, SparseLinear)]
    assert len(layers) == 4 * 6 + 1  # every block Linear and the LM head
    assert not any(type(m) is nn.Linear for m in sparse.model.modules())
    # CSR: 4-byte value + 4-byte column index per non-zero, plus (rows + 1) int32 row pointers.
    weights = linear_weights(dense.model).values()
    expected = sum(int(w.count_nonzero()) * 8 + (w.shape[0] + 1) * 4 for w in weights)
    m = techs["unstructured_pruning"].metrics(sparse.model)
    assert m["weight_storage_bytes"] == expected < 0.25 * m["dense_weight_bytes"]
    assert m["sparse_layer_count"] == 25
    assert abs(m["sparsity_fraction"] - 0.9) < 1e-3
    assert sparse_losses == pytest.approx(dense_losses, rel=1e-5)


def test_sparse_storage_is_skipped_below_break_even(tmp_path: Path) -> None:
    """At 30 % sparsity CSR (0.7 * 8 bytes per element) is larger than dense fp32: layers stay dense."""
    opts = {"sparsity": 0.3, "storage": "sparse"}
    session, techs, _ = run(tmp_path, [{"unstructured_pruning": opts}], kind="infer", steps=1)
    assert techs["unstructured_pruning"].metrics(session.model)["sparse_layer_count"] == 0


def test_sparse_storage_is_inference_only(tmp_path: Path) -> None:
    case = make_case(tmp_path, [{"unstructured_pruning": {"storage": "sparse"}}], kind="train")
    (tech,) = techniques_for(case)
    assert "inference-only" in (tech.unsupported_reason(CPU, context_for(case)) or "")


# ---- structured pruning ------------------------------------------------------------------------------


def test_structured_pruning_parameter_count_is_exact(tmp_path: Path) -> None:
    opts = {"heads_fraction": 0.5, "ffn_fraction": 0.25}
    session, techs, _ = run(tmp_path, [{"structured_pruning": opts}])
    cfg = ModelConfig(**make_case(tmp_path, []).model)
    hs, d = cfg.head_dim, cfg.d_model
    heads, neurons = 2, 128  # of 4 heads and 512 neurons per layer
    per_layer = heads * hs * (3 * (d + 1) + d) + neurons * (
        (d + 1) + d
    )  # q/k/v rows + bias, out_proj columns
    expected = count_params(cfg) - cfg.n_layers * per_layer
    assert sum(p.numel() for p in session.model.parameters()) == expected
    m = techs["structured_pruning"].metrics(session.model)
    assert (m["heads_kept_total"], m["ffn_neurons_kept_total"]) == (8, 1536)


def test_structured_pruning_equals_zeroing_the_removed_units(tmp_path: Path) -> None:
    """Removing heads / neurons computes what the full model computes with their outputs zeroed; the
    removed ones have the smallest norms."""
    opts = {"heads_fraction": 0.25, "ffn_fraction": 0.5}
    pruned, _, _ = run(tmp_path, [{"structured_pruning": opts}], kind="infer", steps=1)
    full = open_session(make_case(tmp_path, [], kind="infer", steps=1)).model
    attn_pairs = zip(_of(full, CausalSelfAttention), _of(pruned.model, CausalSelfAttention), strict=True)
    with torch.no_grad():
        for a_full, a_pruned in attn_pairs:
            scores = head_scores(a_full)
            kept = _kept_heads(a_full, a_pruned)
            assert scores[kept].min() >= scores[_others(kept, 4)].max()
            cols = a_full.out_proj.weight.view(-1, 4, a_full.head_dim)
            cols[:, _others(kept, 4)] = 0
        for f_full, f_pruned in zip(_of(full, FeedForward), _of(pruned.model, FeedForward), strict=True):
            scores = neuron_scores(f_full)
            kept = _kept_rows(f_full.fc1.weight, f_pruned.fc1.weight)
            assert scores[kept].min() >= scores[_others(kept, 512)].max()
            f_full.fc2.weight[:, _others(kept, 512)] = 0
        x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(pruned.model(x), full(x), rtol=1e-5, atol=1e-5)


def _of(model: nn.Module, cls: type) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, cls)]


def _kept_rows(full: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    return torch.tensor([int((full == row).all(dim=1).nonzero()) for row in pruned])


def _kept_heads(full: CausalSelfAttention, pruned: CausalSelfAttention) -> torch.Tensor:
    rows = _kept_rows(full.q_proj.weight, pruned.q_proj.weight)
    return rows.view(-1, full.head_dim)[:, 0] // full.head_dim


def _others(kept: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().flatten()


# ---- L1 regularisation ---------------------------------------------------------------------------------


def test_l1_training_reduces_the_l1_norm(tmp_path: Path) -> None:
    base, _, _ = run(tmp_path, [], steps=3)
    l1, techs, _ = run(tmp_path, [{"l1_regularization": {"lambda_": 1e-2, "threshold": 1e-3}}], steps=3)
    tech = techs["l1_regularization"]
    m_base, m_l1 = tech.metrics(base.model), tech.metrics(l1.model)
    # AdamW moves each weight by about lr (1e-3) per step; the L1 term makes that move toward 0.
    assert m_l1["l1_norm"] < m_base["l1_norm"] * 0.9
    assert m_l1["l1_sparsity_fraction"] > m_base["l1_sparsity_fraction"]
    assert m_l1["l1_sparsity_threshold"] == 1e-3


def test_l1_loss_includes_the_penalty(tmp_path: Path) -> None:
    lam = 1e-3
    _, _, base_losses = run(tmp_path, [], steps=1)
    _, techs, losses = run(tmp_path, [{"l1_regularization": {"lambda_": lam}}], steps=1)
    fresh = open_session(make_case(tmp_path, [], steps=1)).model  # weights before the step
    penalty = lam * techs["l1_regularization"].metrics(fresh)["l1_norm"]
    assert losses[0] == pytest.approx(base_losses[0] + penalty, rel=1e-5)


# ---- fake quantization --------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "granularity"), [(4, "per_tensor"), (3, "per_channel")])
def test_fake_quantization_follows_the_formula(tmp_path: Path, bits: int, granularity: str) -> None:
    opts = {"bits": bits, "granularity": granularity}
    session, techs, _ = run(tmp_path, [{"fake_quantization": opts}], kind="infer", steps=1)
    original = linear_weights(open_session(make_case(tmp_path, [], kind="infer", steps=1)).model)
    qmax = 2 ** (bits - 1) - 1
    for n, w in linear_weights(session.model).items():
        w0 = original[n]
        amax = w0.abs().amax(dim=1, keepdim=True) if granularity == "per_channel" else w0.abs().max()
        s = amax / qmax
        assert torch.equal(w, torch.clamp(torch.round(w0 / s), -qmax, qmax) * s), n
        rows = w if granularity == "per_channel" else w.reshape(1, -1)
        assert max(len(torch.unique(r)) for r in rows) <= 2**bits
    m = techs["fake_quantization"].metrics(session.model)
    assert 2**bits - 2 <= m["max_distinct_values"] <= 2**bits - 1
    numel = sum(w.numel() for w in original.values())
    scales = sum(w.shape[0] for w in original.values()) if granularity == "per_channel" else len(original)
    assert m["weight_storage_bytes"] == 4 * numel  # fake: still fp32
    assert m["packed_weight_bytes"] == numel * bits // 8 + 4 * scales


def test_fake_quantization_trains_through_a_straight_through_estimator(tmp_path: Path) -> None:
    case = make_case(tmp_path, [{"fake_quantization": {"bits": 4}}], steps=2)
    session = open_session(case)
    layer = session.model.get_submodule("blocks.0.mlp.fc1")
    original = layer.parametrizations.weight.original
    before = original.detach().clone()
    assert all(math.isfinite(session.step(i)) for i in range(2))
    assert not torch.equal(original.detach(), before)  # the fp32 weight is what trains
    assert torch.equal(layer.weight, fake_quantize(original, 4, per_channel=False))


# ---- dynamic int8 and weight-only quantization ------------------------------------------------------


def test_dynamic_int8_runs_and_shrinks_the_weights(tmp_path: Path) -> None:
    _, _, base_losses = run(tmp_path, [], kind="infer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated
        warnings.simplefilter("ignore", UserWarning)
        session, techs, losses = run(
            tmp_path, [{"dynamic_int8": {"granularity": "per_channel"}}], kind="infer"
        )
    m = techs["dynamic_int8"].metrics(session.model)
    assert m["quantized_layer_count"] == 25
    # int8 data + one float64 scale and one int64 zero point per output row.
    rows = sum(
        w.shape[0] for w in linear_weights(open_session(make_case(tmp_path, [], kind="infer")).model).values()
    )
    assert m["weight_storage_bytes"] == m["dense_weight_bytes"] // 4 + 16 * rows
    assert losses == pytest.approx(base_losses, abs=0.02)


def test_dynamic_int8_refuses_cuda_and_bf16(tmp_path: Path) -> None:
    case = make_case(tmp_path, ["dynamic_int8"], kind="infer", dtype="bfloat16")
    (tech,) = techniques_for(case)
    ctx = context_for(case)
    assert "fp32" in (tech.unsupported_reason(CPU, ctx) or "")
    assert "CPU kernels only" in (tech.unsupported_reason(CPU, dataclasses.replace(ctx, device="cuda")) or "")


@pytest.mark.parametrize(
    ("opts", "bytes_per_weight"),
    [
        ({"backend": "bitsandbytes", "scheme": "int8"}, 1.0),
        ({"backend": "bitsandbytes", "scheme": "nf4"}, 0.5),
        ({"backend": "bitsandbytes", "scheme": "fp4"}, 0.5),
        ({"backend": "torchao", "scheme": "int8"}, 1.0),
    ],
)
def test_weight_only_quantization_runs_and_shrinks_the_weights(
    tmp_path: Path, opts: dict[str, str], bytes_per_weight: float
) -> None:
    pytest.importorskip(opts["backend"], reason=f"needs {opts['backend']} (see its unsupported_reason)")
    _, _, base_losses = run(tmp_path, [], kind="infer")
    session, techs, losses = run(tmp_path, [{"weight_only_quantization": opts}], kind="infer")
    m = techs["weight_only_quantization"].metrics(session.model)
    assert m["quantized_layer_count"] == 25
    numel = m["dense_weight_bytes"] // 4
    # Scales: one fp32 per row (int8), one fp32 absmax per 64 weights plus a 16-entry code (4-bit).
    assert numel * bytes_per_weight < m["weight_storage_bytes"] < numel * (bytes_per_weight + 0.1)
    assert losses == pytest.approx(base_losses, abs=0.05)


def test_weight_only_quantization_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case(
        tmp_path, [{"weight_only_quantization": {"backend": "torchao", "scheme": "int4"}}], "infer"
    )
    (tech,) = techniques_for(case)
    ctx = context_for(case)
    monkeypatch.setattr(Environment, "has_module", staticmethod(lambda name: True))
    assert "needs CUDA" in (tech.unsupported_reason(CPU, ctx) or "")
    monkeypatch.setattr(Environment, "has_module", staticmethod(lambda name: False))
    assert (tech.unsupported_reason(CPU, ctx) or "").startswith("needs package torchao (pip install")
    with pytest.raises(SuiteError, match="torchao offers schemes int8, int4, not nf4"):
        make_case(tmp_path, [{"weight_only_quantization": {"backend": "torchao", "scheme": "nf4"}}], "infer")


def test_weight_only_quantization_in_training_needs_a_frozen_base(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    case = make_case(tmp_path, ["weight_only_quantization"], kind="train")
    with pytest.raises(ValueError, match="frozen Linear weights only"):
        open_session(case)


# ---- composition ------------------------------------------------------------------------------------


def test_two_weight_quantizers_are_refused_at_expansion(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="two weight quantizers"):
        make_case(tmp_path, ["fake_quantization", "dynamic_int8"], kind="infer")


def test_sparse_or_masked_storage_conflicts_with_quantizers() -> None:
    quant = techreg.instantiate("dynamic_int8", {})
    for storage, refused in (("sparse", True), ("masks", True), ("dense", False)):
        pruning = techreg.instantiate("unstructured_pruning", {"storage": storage})
        assert isinstance(pruning, UnstructuredPruning)
        assert (pruning.conflicts_with(quant) is not None) is refused, storage


def test_composition_order_prunes_before_quantizing() -> None:
    names = ["weight_only_quantization", "unstructured_pruning", "dynamic_int8", "structured_pruning"]
    order = [t.name for t in techreg.compose((n, {}) for n in names)]
    assert order == ["structured_pruning", "unstructured_pruning", "dynamic_int8", "weight_only_quantization"]


def test_bnb_4bit_leaves_layers_off_the_block_grid_unquantized(tmp_path: Path) -> None:
    """After removing 1 of 4 heads, out_proj takes 96 inputs, not a multiple of the 64-weight block that
    bitsandbytes' CPU 4-bit kernel needs: those 4 layers stay fp32, the 21 others are nf4."""
    pytest.importorskip("bitsandbytes")
    techniques = [
        {"structured_pruning": {"heads_fraction": 0.25}},
        {"weight_only_quantization": {"scheme": "nf4"}},
    ]
    session, techs, _ = run(tmp_path, techniques, kind="infer", steps=1)
    m = techs["weight_only_quantization"].metrics(session.model)
    assert (m["quantized_layer_count"], m["unquantized_layer_count"]) == (21, 4)
    assert m["technique_note"].startswith(
        "weight_only_quantization: 4 of 25 targeted layers kept in full precision"
    )


def test_bnb_4bit_on_cpu_keeps_a_head_whose_width_is_off_the_32_row_grid(tmp_path: Path) -> None:
    """A 300-token head crashed the AVX512-BF16 inference path ("N must be divisible by block_n"): it
    stays fp32 on every CPU alike, and the record says so."""
    pytest.importorskip("bitsandbytes")
    from harness.techniques.weight_only_quantization import _bnb_cpu_4bit_ok

    assert not _bnb_cpu_4bit_ok(torch.nn.Linear(64, 300), 64) and _bnb_cpu_4bit_ok(
        torch.nn.Linear(64, 320), 64
    )
    assert not _bnb_cpu_4bit_ok(torch.nn.Linear(96, 64), 64)


def test_torchao_on_the_head_says_its_weight_is_dequantized_per_call(tmp_path: Path) -> None:
    """Its tensor peak read 1.09x the baseline's with no word why: the record now says it."""
    pytest.importorskip("torchao")
    for include, noted in ((True, True), (False, False)):
        techniques = [{"weight_only_quantization": {"backend": "torchao", "include_lm_head": include}}]
        session, techs, _ = run(tmp_path, techniques, kind="infer", steps=1)
        note = techs["weight_only_quantization"].metrics(session.model).get("technique_note") or ""
        assert ("torchao dequantizes the head's weight on every call" in note) is noted, note


@pytest.mark.parametrize(
    ("techniques", "note"),
    [
        (
            [{"grouped_query_attention": {"kv_heads": 4}}],
            "grouped_query_attention: the model has 4 K/V heads",
        ),
        ([{"grouped_query_attention": {"kv_heads": 2}}], None),
    ],
)
def test_a_technique_that_found_nothing_to_do_says_so(tmp_path: Path, techniques, note) -> None:
    """ok at ratio 1.00 reads as "no saving": a technique that changed nothing says why in the record."""
    session, _techs, _ = run(tmp_path, techniques, kind="infer", steps=1)
    said = {k: v for t in session.techniques for k, v in t.metrics(session.model).items()}.get(
        "technique_note"
    )
    assert (said is None) if note is None else (said is not None and said.startswith(note)), said
