from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.models.transformer import CausalSelfAttention, FeedForward


class StructuredPruning(Technique):
    """Removes whole attention heads and FFN neurons with the smallest weight norm (the seed's 4.3.1).

    A head's norm is the L2 norm of its q, k and v rows and its out_proj columns; a neuron's is that of
    its fc1 row (with bias) and fc2 column. The removed rows and columns are sliced out, so the result
    is a smaller dense model: parameters, gradients, optimizer state and the per-layer activations
    (q/k/v, scores, FFN hidden) all shrink, with no special kernel.
    Costs: quality (pruned at initialisation here, without fine-tuning or importance scoring on data).
    Per layer, round(fraction * n) heads (at most n - 1) and round(fraction * d_ff) neurons (at most
    d_ff - 1) are removed, rounding halves up.

    Llama-style blocks (transformers' llama, mistral, qwen2): SwiGLU neurons are gate and up rows with
    their down column. Heads are GQA-aware: with g query heads per K/V head, round(fraction * g) query
    heads (at most g - 1) are removed from every group, so K/V heads (and the KV cache) stay and every
    group keeps the same size; with one query head per K/V head (MHA) whole heads go, K/V included.
    GPT-2 (one fused q/k/v projection) and factory modules are `unsupported`.
    """

    name: ClassVar[str] = "structured_pruning"
    phase: ClassVar[Phase] = Phase.STRUCTURE

    class Config(TechniqueConfig):
        heads_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)
        """Fraction of each layer's attention heads removed (smallest norm first)."""
        ffn_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)
        """Fraction of each layer's FFN hidden neurons removed (smallest norm first)."""

    config: Config

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.model_family == "gpt2":
            return "GPT-2 keeps q, k, v in one fused c_attn projection; only Llama-style blocks are sliced"
        if ctx.model_source == "factory":
            return "a factory module's head and neuron layout is its own; harness slices only known blocks"
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch

        from harness.models.transformer import CausalSelfAttention, FeedForward

        with torch.no_grad():
            for module in list(model.modules()):
                if isinstance(module, CausalSelfAttention):
                    prune_heads(module, removed_count(module.n_heads, self.config.heads_fraction))
                elif isinstance(module, FeedForward):
                    prune_neurons(module, removed_count(module.fc1.out_features, self.config.ffn_fraction))
                elif _is_llama_attention(module):
                    prune_gqa_heads(module, self.config.heads_fraction)
                elif _is_swiglu(module):
                    prune_swiglu(module, self.config.ffn_fraction)
        return model

    def metrics(self, model: nn.Module) -> dict[str, float | int]:
        from harness.models.transformer import CausalSelfAttention, FeedForward

        heads = [m.n_heads for m in model.modules() if isinstance(m, CausalSelfAttention)]
        heads += [m.q_proj.out_features // m.head_dim for m in model.modules() if _is_llama_attention(m)]
        neurons = [m.fc1.out_features for m in model.modules() if isinstance(m, FeedForward)]
        neurons += [m.gate_proj.out_features for m in model.modules() if _is_swiglu(m)]
        return {  # the parameter count itself is the runner's param_count
            "heads_kept_total": sum(heads),
            "ffn_neurons_kept_total": sum(neurons),
        }


def removed_count(n: int, fraction: float) -> int:
    """round(fraction * n) with halves rounded up, keeping at least one unit."""
    return min(math.floor(fraction * n + 0.5), n - 1)


def head_scores(attn: CausalSelfAttention) -> torch.Tensor:
    """(nh,) L2 norm of each head's q/k/v rows and out_proj columns."""
    import torch

    nh, hs = attn.n_heads, attn.head_dim
    sq = torch.zeros(nh, device=attn.q_proj.weight.device, dtype=torch.float32)
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        sq += proj.weight.float().reshape(nh, hs, -1).pow(2).sum(dim=(1, 2))
        if proj.bias is not None:
            sq += proj.bias.float().reshape(nh, hs).pow(2).sum(dim=1)
    sq += attn.out_proj.weight.float().reshape(-1, nh, hs).pow(2).sum(dim=(0, 2))
    return sq.sqrt()


def neuron_scores(ffn: FeedForward) -> torch.Tensor:
    """(d_ff,) L2 norm of each neuron's fc1 row (+ bias) and fc2 column."""
    sq = ffn.fc1.weight.float().pow(2).sum(dim=1) + ffn.fc2.weight.float().pow(2).sum(dim=0)
    if ffn.fc1.bias is not None:
        sq += ffn.fc1.bias.float().pow(2)
    return sq.sqrt()


def prune_heads(attn: CausalSelfAttention, n_remove: int) -> None:
    import torch

    if n_remove <= 0:
        return
    keep = _largest(head_scores(attn), attn.n_heads - n_remove)
    hs = attn.head_dim
    rows = (keep[:, None] * hs + torch.arange(hs, device=keep.device)).flatten()  # kept q/k/v output rows
    attn.q_proj = _keep_rows(attn.q_proj, rows)
    attn.k_proj = _keep_rows(attn.k_proj, rows)
    attn.v_proj = _keep_rows(attn.v_proj, rows)
    attn.out_proj = _keep_cols(attn.out_proj, rows)
    attn.n_heads = len(keep)


def prune_neurons(ffn: FeedForward, n_remove: int) -> None:
    if n_remove <= 0:
        return
    keep = _largest(neuron_scores(ffn), ffn.fc1.out_features - n_remove)
    ffn.fc1 = _keep_rows(ffn.fc1, keep)
    ffn.fc2 = _keep_cols(ffn.fc2, keep)


def _is_llama_attention(module: nn.Module) -> bool:
    """transformers' Llama/Mistral/Qwen2 attention: separate q/k/v/o_proj and num_key_value_groups."""
    return all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "num_key_value_groups"))


def _is_swiglu(module: nn.Module) -> bool:
    from torch import nn

    return all(isinstance(getattr(module, a, None), nn.Linear) for a in ("gate_proj", "up_proj", "down_proj"))


def prune_gqa_heads(attn: nn.Module, fraction: float) -> None:
    """Query heads removed group by group (K/V kept), or whole heads when every group has one."""
    import torch

    hs, g = attn.head_dim, attn.num_key_value_groups
    n_kv = attn.k_proj.out_features // hs
    sq = attn.q_proj.weight.float().reshape(n_kv * g, hs, -1).pow(2).sum(dim=(1, 2))
    sq += attn.o_proj.weight.float().reshape(-1, n_kv * g, hs).pow(2).sum(dim=(0, 2))
    if attn.q_proj.bias is not None:
        sq += attn.q_proj.bias.float().reshape(n_kv * g, hs).pow(2).sum(dim=1)
    if g == 1:  # MHA: a head is its q, k, v rows and o columns
        for proj in (attn.k_proj, attn.v_proj):
            sq += proj.weight.float().reshape(n_kv, hs, -1).pow(2).sum(dim=(1, 2))
        n_remove = removed_count(n_kv, fraction)
        if n_remove <= 0:
            return
        keep = _largest(sq, n_kv - n_remove)
        rows = _head_rows(keep, hs)
        attn.k_proj, attn.v_proj = _keep_rows(attn.k_proj, rows), _keep_rows(attn.v_proj, rows)
    else:
        n_remove = removed_count(g, fraction)
        if n_remove <= 0:
            return
        per_group = sq.reshape(n_kv, g)
        keep = torch.cat([_largest(per_group[j], g - n_remove) + j * g for j in range(n_kv)])
        rows = _head_rows(keep, hs)
        attn.num_key_value_groups = g - n_remove
    attn.q_proj = _keep_rows(attn.q_proj, rows)
    attn.o_proj = _keep_cols(attn.o_proj, rows)


def prune_swiglu(mlp: nn.Module, fraction: float) -> None:
    """Neurons (gate and up rows, down column) with the smallest norm removed."""
    n = mlp.gate_proj.out_features
    n_remove = removed_count(n, fraction)
    if n_remove <= 0:
        return
    sq = mlp.gate_proj.weight.float().pow(2).sum(dim=1) + mlp.up_proj.weight.float().pow(2).sum(dim=1)
    sq += mlp.down_proj.weight.float().pow(2).sum(dim=0)
    keep = _largest(sq, n - n_remove)
    mlp.gate_proj, mlp.up_proj = _keep_rows(mlp.gate_proj, keep), _keep_rows(mlp.up_proj, keep)
    mlp.down_proj = _keep_cols(mlp.down_proj, keep)


def _head_rows(heads: torch.Tensor, hs: int) -> torch.Tensor:
    import torch

    return (heads[:, None] * hs + torch.arange(hs, device=heads.device)).flatten()


def _largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order (so kept heads keep their layout)."""
    return scores.topk(k).indices.sort().values


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """A new Linear with only the given output rows; the old weight is freed with the old module."""
    from torch import nn

    w = linear.weight
    new = nn.Linear(
        linear.in_features, len(rows), bias=linear.bias is not None, device=w.device, dtype=w.dtype
    )
    new.weight.copy_(w[rows])
    if linear.bias is not None:
        new.bias.copy_(linear.bias[rows])
    new.requires_grad_(w.requires_grad)
    return new


def _keep_cols(linear: nn.Linear, cols: torch.Tensor) -> nn.Linear:
    """A new Linear with only the given input columns; the bias (per output) is unchanged."""
    from torch import nn

    w = linear.weight
    new = nn.Linear(
        len(cols), linear.out_features, bias=linear.bias is not None, device=w.device, dtype=w.dtype
    )
    new.weight.copy_(w[:, cols])
    if linear.bias is not None:
        new.bias.copy_(linear.bias)
    new.requires_grad_(w.requires_grad)
    return new
