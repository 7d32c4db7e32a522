# mypy: disallow-subclassing-any=False
# (torch is untyped here, so nn.Module is Any to mypy; subclassing it is the point of this file.)
"""Shared pieces of the parameter-efficient techniques (bottleneck adapters, LoRA): the adapter
modules, the per-position block wrapper, and freezing of the base model.

Adapter weights are plain `nn.Parameter`s used through `F.linear`, not `nn.Linear` submodules, so a
later STRUCTURE rewrite that swaps every `nn.Linear` (quantization, order 20-29) quantizes the frozen
base and leaves the trainable adapters in full precision, as QLoRA does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from harness.techniques.base import TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn


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


def add_after(model: nn.Module, part: str, make: Callable[[], nn.Module], technique: str) -> None:
    """Put `make()` after sublayer `part` ("attn" or "mlp") of every layer position."""
    from harness.models.layout import blocks_or_raise, layout_of, part_attr_or_raise
    from harness.techniques._adapter_modules import AfterSublayer

    blocks = blocks_or_raise(model, technique)
    attr = part_attr_or_raise(layout_of(model), part, technique)
    if len({id(b) for b in blocks}) != len(blocks):
        raise ValueError("one block object sits at several positions; adapters need one module per position")
    for block in blocks:
        setattr(block, attr, AfterSublayer(getattr(block, attr), make()))


def blocks_of(model: nn.Module) -> nn.ModuleList:
    from harness.models.layout import blocks_or_raise

    return blocks_or_raise(model, "this technique")


def d_model_of(model: nn.Module) -> int:
    """The width of the residual stream: the token embedding's (a factory module without an embedding:
    the first block's first Linear input)."""
    from torch import nn

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
    from harness.techniques._adapter_modules import AdapterModule, LoRALinear

    extras = set(getattr(model, _EXTRAS_ATTR, set())) | set(also_train)
    object.__setattr__(model, _EXTRAS_ATTR, extras)
    adapter_ids = {id(p) for m in model.modules() if isinstance(m, AdapterModule) for p in m.parameters()}
    # A LoRALinear holds its frozen base layer; only lora_A and lora_B are the adapter.
    base_ids = {id(p) for m in model.modules() if isinstance(m, LoRALinear) for p in m.base.parameters()}
    adapter_ids -= base_ids
    keep = _extra_params(model, extras)
    for name, p in model.named_parameters():
        p.requires_grad_(_is_adapter_param(name, adapter_ids, p) or id(p) in keep)
