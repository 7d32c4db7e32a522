# mypy: disallow-subclassing-any=False
# (torch is untyped here, so nn.Module is Any to mypy; subclassing it is the point of this file.)
"""The adapter modules (bottleneck, LoRA) and the per-position block wrapper. Apart from _adapters.py so
that the technique modules import without torch; they import these inside their hooks."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class AdapterModule(nn.Module):
    """Marker base class: parameters inside an AdapterModule are trainable adapter weights."""


class Bottleneck(AdapterModule):
    """h + up(act(down(h))): d -> r -> d with a residual (Houlsby et al. 2019).

    `up` starts at zero, so at initialisation the adapter is the identity and the model computes
    exactly what the base model computes.
    """

    def __init__(self, d_model: int, bottleneck: int, like: torch.Tensor) -> None:
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype}
        self.down_weight = nn.Parameter(torch.empty(bottleneck, d_model, **kw))  # (r, C)
        self.down_bias = nn.Parameter(torch.zeros(bottleneck, **kw))
        self.up_weight = nn.Parameter(torch.zeros(d_model, bottleneck, **kw))  # (C, r)
        self.up_bias = nn.Parameter(torch.zeros(d_model, **kw))
        # nn.Linear's default initialisation for the down projection.
        nn.init.kaiming_uniform_(self.down_weight, a=math.sqrt(5))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = F.gelu(F.linear(h, self.down_weight, self.down_bias))  # (B, T, r)
        return h + F.linear(z, self.up_weight, self.up_bias)


class AfterSublayer(nn.Module):
    """adapter(sublayer(x)): put in a block's `attn` or `mlp` slot, the adapter acts on the sublayer's
    output before the block's residual add (Houlsby placement), and the block's own forward is unchanged.

    Set on `model.blocks[i]`, which is one module per layer position even under cross_layer_sharing
    (its positions share submodules, not the block), so each position gets its own adapter.
    """

    def __init__(self, sublayer: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.sublayer = sublayer
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # transformers' attention takes keyword arguments and returns (output, weights): the adapter acts
        # on the output, the rest passes through.
        out = self.sublayer(*args, **kwargs)
        if isinstance(out, tuple):
            return (self.adapter(out[0]), *out[1:])
        return self.adapter(out)


class LoRALinear(AdapterModule):
    """y = base(x) + (alpha / r) * x A^T B^T with `base` frozen (Hu et al. 2021).

    A (r, d_in) starts like nn.Linear's weight, B (d_out, r) at zero: at initialisation the layer equals
    its base exactly. Trainable: r * (d_in + d_out) parameters; the base keeps no gradient or state.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: int, dropout: float) -> None:
        super().__init__()
        self.base = base
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank
        # Identity at p = 0: no dropout mask is kept for backward.
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # (B, T, r) -> (B, T, d_out)
        return self.base(x) + self.scaling * update
