# mypy: disallow-subclassing-any=False
# (torch is untyped here, so nn.Module is Any to mypy; subclassing it is the point of HfCausalLM.)
"""Build a transformers causal LM from an HfModelConfig, offline, behind harness's model contract."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.models.hf import CLASSES, INSTALL_HINT, HfModelConfig


class HfCausalLM(nn.Module):
    """A transformers causal LM seen as harness sees every model: `forward(ids) -> logits (B, T, V)`,
    `hidden(ids) -> final hidden states (B, T, C)` (chunked losses start there) and `lm_head`.

    `use_cache=False`: a train or infer step keeps no KV cache (the generate workload drives `self.hf`
    with its own cache)."""

    def __init__(self, hf: nn.Module, family: str) -> None:
        super().__init__()
        self.hf = hf
        self.family = family

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.hf(input_ids=idx, use_cache=False).logits
        return logits

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.hf.base_model(input_ids=idx, use_cache=False).last_hidden_state
        return out

    @property
    def lm_head(self) -> nn.Module:
        head: nn.Module = self.hf.get_output_embeddings()
        return head


def build_hf(cfg: HfModelConfig) -> HfCausalLM:
    """The model, randomly initialised by transformers' own init (seeded by the caller), on the current
    default device (meta for parameter counts). GPT-2's Conv1D layers become nn.Linear (same math,
    transposed weight) so every technique that acts on Linear layers acts on GPT-2 too."""
    try:
        import transformers
    except ImportError as e:
        raise RuntimeError(f"{INSTALL_HINT} ({e})") from None
    transformers.logging.set_verbosity_error()  # a small override vocab makes it warn about bos/eos ids
    config_cls, model_cls = (getattr(transformers, name) for name in CLASSES[cfg.family])
    config = config_cls(**cfg.config)
    model = model_cls._from_config(config, attn_implementation=cfg.attention)
    if cfg.family == "gpt2":
        conv1d_to_linear(model)
    return HfCausalLM(model, cfg.family)


def conv1d_to_linear(model: nn.Module) -> None:
    """Replace transformers' Conv1D (y = x W + b, W (in, out)) by nn.Linear (W^T stored), in place."""
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, _linear_of(module))


def _linear_of(conv: Any) -> nn.Linear:
    w = conv.weight  # (in, out)
    # Built on meta and given the converted tensors, so no second random weight is ever allocated.
    linear = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device="meta", dtype=w.dtype)
    with torch.no_grad():
        linear.weight = nn.Parameter(w.detach().t().contiguous(), requires_grad=w.requires_grad)
        if conv.bias is not None:
            linear.bias = nn.Parameter(conv.bias.detach(), requires_grad=conv.bias.requires_grad)
    return linear
