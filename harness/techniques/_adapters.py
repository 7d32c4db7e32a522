# mypy: disallow-subclassing-any=False
# (torch is untyped here, so nn.Module is Any to mypy; subclassing it is the point of this file.)
"""Shared pieces of the parameter-efficient techniques (bottleneck adapters, LoRA): the adapter
modules, the per-position block wrapper, and freezing of the base model.

Adapter weights are plain `nn.Parameter`s used through `F.linear`, not `nn.Linear` submodules, so a
later STRUCTURE rewrite that swaps every `nn.Linear` (quantization, order 20-29) quantizes the frozen
base and leaves the trainable adapters in full precision, as QLoRA does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.techniques.base import TechniqueConfig

# Base parameters a user may keep trainable next to the adapters ("also_train" option).
# lm_head: the output projection (with tied embeddings it is the token embedding, so both train).
# embeddings: token and position embeddings. layer_norms: every LayerNorm (Houlsby et al. train these).
Extra = Literal["lm_head", "embeddings", "layer_norms"]

# Remembered on the model, so a second adapter technique's freeze keeps what the first one asked for.
_EXTRAS_ATTR = "_harness_also_train"


class BottleneckConfig(TechniqueConfig):
    """Options of the bottleneck adapters (per layer or shared)."""

    bottleneck: int = Field(default=64, ge=1)
    """r: the adapter's hidden width."""
    also_train: list[Extra] = Field(default_factory=list)
    """Base parts that train too: lm_head, embeddings, layer_norms (Houlsby et al. trained norms)."""


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


def add_after(model: nn.Module, part: str, make: Callable[[], nn.Module], technique: str) -> None:
    """Put `make()` after sublayer `part` ("attn" or "mlp") of every layer position."""
    from harness.models.layout import blocks_or_raise, layout_of, part_attr_or_raise

    blocks = blocks_or_raise(model, technique)
    attr = part_attr_or_raise(layout_of(model), part, technique)
    if len({id(b) for b in blocks}) != len(blocks):
        raise ValueError("one block object sits at several positions; adapters need one module per position")
    for block in blocks:
        setattr(block, attr, AfterSublayer(getattr(block, attr), make()))


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


def blocks_of(model: nn.Module) -> nn.ModuleList:
    from harness.models.layout import blocks_or_raise

    return blocks_or_raise(model, "this technique")


def d_model_of(model: nn.Module) -> int:
    """The width of the residual stream: the token embedding's (a factory module without an embedding:
    the first block's first Linear input)."""
    from harness.models.layout import layout_of

    embeddings = layout_of(model).embeddings
    if embeddings:
        return int(embeddings[0].weight.shape[1])
    first = next(m for m in blocks_of(model).modules() if isinstance(m, nn.Linear))
    return int(first.in_features)


def first_weight(model: nn.Module) -> torch.Tensor:
    """A base weight whose device and dtype new adapter tensors must match."""
    return next(p for p in model.parameters() if p.is_floating_point())


def _is_adapter_param(name: str, adapter_ids: set[int], param: nn.Parameter) -> bool:
    # peft names its LoRA tensors lora_A / lora_B / lora_embedding_*; ours live in AdapterModules.
    return id(param) in adapter_ids or "lora_" in name


def _extra_params(model: nn.Module, extras: Iterable[str]) -> set[int]:
    from harness.models.layout import layout_of

    ids: set[int] = set()
    layout = layout_of(model)
    for extra in extras:
        if extra == "lm_head" and layout.lm_head is not None:
            ids.update(id(p) for p in layout.lm_head.parameters())
        elif extra == "embeddings":
            for module in layout.embeddings:
                ids.update(id(p) for p in module.parameters())
        elif extra == "layer_norms":  # LayerNorm and RMSNorm alike
            for m in layout.norms(model):
                ids.update(id(p) for p in m.parameters())
    return ids


def freeze_base(model: nn.Module, also_train: Iterable[str] = ()) -> None:
    """Train only adapter weights (ours and peft's), plus the base parts named in `also_train`.

    Composable: the union of every adapter technique's `also_train` is remembered on the model, so
    LoRA and bottleneck adapters applied one after the other keep both sets of trainables.
    """
    extras = set(getattr(model, _EXTRAS_ATTR, set())) | set(also_train)
    object.__setattr__(model, _EXTRAS_ATTR, extras)
    adapter_ids = {id(p) for m in model.modules() if isinstance(m, AdapterModule) for p in m.parameters()}
    # A LoRALinear holds its frozen base layer; only lora_A and lora_B are the adapter.
    base_ids = {id(p) for m in model.modules() if isinstance(m, LoRALinear) for p in m.base.parameters()}
    adapter_ids -= base_ids
    keep = _extra_params(model, extras)
    for name, p in model.named_parameters():
        p.requires_grad_(_is_adapter_param(name, adapter_ids, p) or id(p) in keep)
