from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques.base import Context, Phase, Technique, TechniqueConfig

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
    """

    name: ClassVar[str] = "structured_pruning"
    phase: ClassVar[Phase] = Phase.STRUCTURE

    class Config(TechniqueConfig):
        heads_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)
        """Fraction of each layer's attention heads removed (smallest norm first)."""
        ffn_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)
        """Fraction of each layer's FFN hidden neurons removed (smallest norm first)."""

    config: Config

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch

        from harness.models.transformer import CausalSelfAttention, FeedForward

        with torch.no_grad():
            for module in list(model.modules()):
                if isinstance(module, CausalSelfAttention):
                    prune_heads(module, removed_count(module.n_heads, self.config.heads_fraction))
                elif isinstance(module, FeedForward):
                    prune_neurons(module, removed_count(module.fc1.out_features, self.config.ffn_fraction))
        return model

    def metrics(self, model: nn.Module) -> dict[str, float | int]:
        from harness.models.transformer import CausalSelfAttention, FeedForward

        heads = [m.n_heads for m in model.modules() if isinstance(m, CausalSelfAttention)]
        neurons = [m.fc1.out_features for m in model.modules() if isinstance(m, FeedForward)]
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
