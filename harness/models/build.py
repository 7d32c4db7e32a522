"""Build the module of any model source (the caller seeds torch and chooses the default device)."""

from __future__ import annotations

import torch
from torch import nn

from harness.models.config import ModelConfig
from harness.models.factory import FactoryModelConfig
from harness.models.hf import HfModelConfig
from harness.models.source import ModelSource


def build_module(cfg: ModelSource) -> nn.Module:
    """A freshly initialised module for the config: the built-in Transformer, a transformers model, or
    what the user's factory returns (checked against the contract)."""
    if isinstance(cfg, ModelConfig):
        from harness.models.transformer import Transformer

        return Transformer(cfg)
    if isinstance(cfg, HfModelConfig):
        from harness.models.hf_build import build_hf

        return build_hf(cfg)
    return build_factory(cfg)


def build_factory(cfg: FactoryModelConfig) -> nn.Module:
    """Import and call the user's factory; a wrong return is a TypeError that names the factory."""
    try:
        make = cfg.load()
    except (ImportError, AttributeError) as e:
        raise ImportError(f"factory {cfg.target!r} cannot be imported: {type(e).__name__}: {e}") from None
    if not callable(make):
        raise TypeError(f"factory {cfg.target!r} is a {type(make).__name__}, not a function")
    model = make(**cfg.kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"factory {cfg.target!r} returned a {type(model).__name__}; it must return a torch.nn.Module "
            "(token ids (B, T) in, logits (B, T, vocab_size) out; see docs/models.md)"
        )
    return model


def check_logits(model: nn.Module, cfg: ModelSource, logits: torch.Tensor, batch: int, seq: int) -> None:
    """The contract's output check, once per case on its first step: logits (B, T, vocab_size)."""
    want = (batch, seq, cfg.vocab_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(
            f"{type(model).__name__}'s forward returned {got}; the contract is logits of shape {want}"
        )


def with_weights(cfg: ModelSource, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The module holding `weights`. The built-in model is built on meta and assigned (no random init
    beside the loaded copy); other sources are built, then loaded: their non-persistent buffers (rotary
    inv_freq) are not in any state dict and must be computed by their own constructor."""
    if isinstance(cfg, ModelConfig):
        from harness.models.transformer import sinusoidal_table

        with torch.device("meta"):
            model = build_module(cfg)
        model.load_state_dict(weights, assign=True)
        if cfg.tie_embeddings:
            model.lm_head.weight = model.tok_emb.weight
        if cfg.pos_encoding == "sinusoidal":  # a non-persistent buffer: not in any state dict
            model.register_buffer(
                "pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False
            )
        return model
    model = build_module(cfg)
    model.load_state_dict(weights)
    return model
