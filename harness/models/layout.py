"""Where a built model keeps its parts: the decoder blocks, attention and MLP inside a block, the linear
layers by role, the embeddings, the final norm and the LM head. Techniques find modules through this,
so one technique body acts on the built-in Transformer, a transformers model and a user's module.

Roles: q, k, v, o (attention projections; GPT-2's fused c_attn is q, k and v at once), mlp_gate,
mlp_up, mlp_down (SwiGLU has all three; a GELU/ReLU MLP has up and down).

A user's module (factory) is read by convention: its decoder blocks are the first nn.ModuleList of
modules of one class, attention and MLP are block attributes named attn/self_attn/attention and
mlp/ffn/feed_forward, roles are Linear attributes named like q_proj/k_proj/v_proj/o_proj (or
out_proj), fc1/fc2 or gate_proj/up_proj/down_proj. What is not found is None, and the techniques
that need it say so (`unsupported`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.models.source import UnsupportedModel

ROLES = ("q", "k", "v", "o", "mlp_gate", "mlp_up", "mlp_down")

# Attribute names of a block's parts and of Linear layers per role, the built-in model's and
# transformers' conventions (used for factory modules too).
ATTN_NAMES = ("attn", "self_attn", "attention")
MLP_NAMES = ("mlp", "ffn", "feed_forward")
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "c_attn"),
    "k": ("k_proj", "c_attn"),
    "v": ("v_proj", "c_attn"),
    "o": ("out_proj", "o_proj", "c_proj"),
    "mlp_gate": ("gate_proj", "w1"),
    "mlp_up": ("fc1", "up_proj", "c_fc", "w3"),
    "mlp_down": ("fc2", "down_proj", "c_proj", "w2"),
}


@dataclass
class Layout:
    """The parts of one built model (live modules, not copies)."""

    family: str
    blocks: nn.ModuleList | None
    attn_attr: str | None  # attribute of a block holding its attention
    mlp_attr: str | None
    embeddings: list[nn.Module] = field(default_factory=list)  # token (and learned position) embeddings
    lm_head: nn.Module | None = None
    # (B, T) ids -> (B, T, C) final hidden states, before the head; None when the model has no such entry.
    hidden: Callable[[torch.Tensor], torch.Tensor] | None = None

    def attention(self, block: nn.Module) -> nn.Module | None:
        return getattr(block, self.attn_attr) if self.attn_attr else None

    def mlp(self, block: nn.Module) -> nn.Module | None:
        return getattr(block, self.mlp_attr) if self.mlp_attr else None

    def role_paths(self, block: nn.Module, role: str) -> list[str]:
        """Dotted paths inside `block` of the Linear layer(s) playing `role` (empty if none)."""
        part_attr = self.mlp_attr if role.startswith("mlp") else self.attn_attr
        part = getattr(block, part_attr, None) if part_attr else None
        if part is None:
            return []
        for name in ROLE_NAMES[role]:
            if isinstance(getattr(part, name, None), nn.Linear) and not _wrong_c_proj(role, part_attr, name):
                return [f"{part_attr}.{name}"]
        return []

    def norms(self, model: nn.Module) -> list[nn.Module]:
        """LayerNorm and RMSNorm modules (transformers' RMSNorm classes are named *RMSNorm)."""
        return [
            m for m in model.modules() if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")
        ]


def _wrong_c_proj(role: str, part_attr: str | None, name: str) -> bool:
    # GPT-2 names both attention's output and the MLP's down projection c_proj.
    return name == "c_proj" and role == "o" and part_attr in MLP_NAMES


def layout_of(model: nn.Module) -> Layout:
    """The layout of a built model, whatever wrapped it (LoRA/peft rewrite submodules in place, so the
    subject model is found among `model.modules()`)."""
    from harness.models.hf_build import HfCausalLM
    from harness.models.transformer import Transformer

    for module in model.modules():
        if isinstance(module, Transformer):
            return _builtin(module)
        if isinstance(module, HfCausalLM):
            return _hf(module)
    return _generic(model)


def _builtin(model: nn.Module) -> Layout:
    embeddings = [m for m in (model.tok_emb, model.pos_emb) if m is not None]
    return Layout("builtin", model.blocks, "attn", "mlp", embeddings, model.lm_head, model.hidden)


def _hf(model: nn.Module) -> Layout:
    base = model.hf.base_model
    if model.family == "gpt2":
        return Layout("gpt2", base.h, "attn", "mlp", [base.wte, base.wpe], model.lm_head, model.hidden)
    return Layout(
        model.family, base.layers, "self_attn", "mlp", [base.embed_tokens], model.lm_head, model.hidden
    )


def _generic(model: nn.Module) -> Layout:
    blocks = next(
        (
            m
            for m in model.modules()
            if isinstance(m, nn.ModuleList) and len(m) and len({type(b) for b in m}) == 1
        ),
        None,
    )
    first = blocks[0] if blocks is not None else None
    attn = next(
        (n for n in ATTN_NAMES if first is not None and isinstance(getattr(first, n, None), nn.Module)), None
    )
    mlp = next(
        (n for n in MLP_NAMES if first is not None and isinstance(getattr(first, n, None), nn.Module)), None
    )
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    head = getattr(model, "lm_head", None)
    hidden = getattr(model, "hidden", None)
    return Layout(
        "factory",
        blocks,
        attn,
        mlp,
        embeddings,
        head if isinstance(head, nn.Module) else None,
        hidden if callable(hidden) and isinstance(head, nn.Module) else None,
    )


def blocks_or_raise(model: nn.Module, technique: str) -> nn.ModuleList:
    """The decoder blocks, or UnsupportedModel naming what the technique needs (a factory module without an
    nn.ModuleList of blocks)."""
    blocks = layout_of(model).blocks
    if blocks is None:
        raise UnsupportedModel(
            f"{technique} needs the model's decoder blocks as an nn.ModuleList of one block class; "
            f"{type(model).__name__} has none (see docs/models.md)"
        )
    return blocks


def part_attr_or_raise(layout: Layout, part: str, technique: str) -> str:
    """The block attribute of "attn" or "mlp", or UnsupportedModel naming the names looked for."""
    attr = layout.attn_attr if part == "attn" else layout.mlp_attr
    if attr is None:
        names = ATTN_NAMES if part == "attn" else MLP_NAMES
        raise UnsupportedModel(f"{technique} needs each block's {part} as an attribute named one of {names}")
    return attr
