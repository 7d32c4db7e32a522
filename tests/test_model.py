"""The subject model: exact parameter counts, both attention paths, both positional encodings."""

from __future__ import annotations

import pytest
import torch

from harness.models.config import SIZES, ModelConfig, count_params
from harness.models.transformer import Transformer, explicit_attention, sinusoidal_table


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_named_size_has_the_counted_parameters(size):
    cfg = SIZES[size]
    with torch.device("meta"):  # no memory: the 1B model is counted, not allocated
        model = Transformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg)


def test_reference_size_matches_the_measured_models_count():
    # docs/techniques.md: the reference model has P = 27,566,080.
    assert count_params(SIZES["reference"]) == 27_566_080


def test_ci_size_is_about_one_million_parameters():
    assert 0.5e6 < count_params(SIZES["ci"]) < 1.5e6


@pytest.mark.parametrize(
    "change",
    [{"tie_embeddings": True}, {"pos_encoding": "sinusoidal"}, {"bias": False}, {"activation": "gelu"}],
)
def test_count_follows_config_changes(change):
    cfg = SIZES["ci"].replace(**change)
    model = Transformer(cfg)
    unique = {id(p): p for p in model.parameters()}.values()
    assert sum(p.numel() for p in unique) == count_params(cfg)


def test_tied_embeddings_remove_exactly_vocab_times_d_model():
    cfg = SIZES["ci"]
    assert count_params(cfg) - count_params(cfg.replace(tie_embeddings=True)) == cfg.vocab_size * cfg.d_model


def test_explicit_attention_is_softmax_qkt_over_sqrt_dk_v():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4) for _ in range(3))
    out = explicit_attention(q, k, v)
    # Row 0 attends only to position 0 under the causal mask.
    assert torch.allclose(out[0, 0, 0], v[0, 0, 0])
    w = torch.softmax((q[0, 0, 2] @ k[0, 0].T) / 2.0, dim=-1)  # sqrt(d_k) = 2
    assert torch.allclose(out[0, 0, 2], w @ v[0, 0], atol=1e-6)


def test_sdpa_path_equals_explicit_path():
    torch.manual_seed(0)
    cfg = SIZES["ci"].replace(n_layers=2)
    explicit = Transformer(cfg)
    fused = Transformer(cfg.replace(attention="sdpa"))
    fused.load_state_dict(explicit.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 64))
    torch.testing.assert_close(fused(idx), explicit(idx), rtol=1e-4, atol=1e-5)


def test_sinusoidal_table_follows_the_formula():
    table = sinusoidal_table(10, 8)
    assert table[3, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item())
    assert table[3, 3] == pytest.approx(torch.cos(torch.tensor(3.0 / 10000 ** (2 / 8))).item())


def test_relu_ffn_is_max_zero():
    cfg = ModelConfig(vocab_size=8, d_model=4, n_layers=1, n_heads=1, d_ff=4, max_seq_len=4)
    mlp = Transformer(cfg).blocks[0].mlp
    x = torch.randn(2, 4)
    expected = torch.clamp(x @ mlp.fc1.weight.T + mlp.fc1.bias, min=0) @ mlp.fc2.weight.T + mlp.fc2.bias
    torch.testing.assert_close(mlp(x), expected)


def test_too_long_sequence_is_refused():
    cfg = SIZES["ci"].replace(max_seq_len=16, n_layers=1)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        Transformer(cfg)(torch.zeros(1, 17, dtype=torch.long))


def test_indivisible_heads_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        SIZES["ci"].replace(n_heads=3)


@pytest.mark.parametrize("change", [{}, {"tie_embeddings": True}, {"pos_encoding": "sinusoidal"}])
def test_a_model_built_from_loaded_weights_is_the_same_model(change):
    from harness.models.build import with_weights

    cfg = SIZES["ci"].replace(n_layers=2, **change)
    torch.manual_seed(1)
    ref = Transformer(cfg)
    model = with_weights(cfg, {k: v.clone() for k, v in ref.state_dict().items()})
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    assert torch.equal(model(idx), ref(idx))
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg)
