# mypy: disallow-subclassing-any=False
# (torch is untyped here, so nn.Module is Any to mypy; subclassing it is the point of this file.)
"""An example `factory:` model: what a user's own module looks like to harness (docs/models.md).

    models:
      mine: {factory: "harness.models.example_factory:build", kwargs: {width: 128, depth: 2}}

It is written the way a user would write it, not with harness's Transformer: RMSNorm, a SwiGLU MLP,
rotary-free learned positions, PyTorch's fused attention. What makes techniques find its parts is only
the naming convention: decoder blocks in an nn.ModuleList, attention in `attn` with q_proj/k_proj/
v_proj/o_proj, the MLP in `mlp`, and (optional) `hidden(ids)` + `lm_head` for chunked losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            p(x).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, c))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.RMSNorm(width)
        self.mlp = SwiGLU(width, 3 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.layers = nn.ModuleList(Layer(width, heads) for _ in range(depth))
        self.norm = nn.RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.positions(torch.arange(ids.size(1), device=ids.device))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden(ids))  # (B, T, V)


def build(
    vocab: int = 256, width: int = 128, depth: int = 2, heads: int = 4, context: int = 1024
) -> nn.Module:
    """The factory: keyword arguments in (the suite's `kwargs`), an nn.Module out."""
    return TinyLM(vocab, width, depth, heads, context)
