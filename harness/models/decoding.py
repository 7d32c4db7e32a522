"""Incremental decoding over any causal LM harness builds: the built-in Transformer or a transformers
model (LlamaForCausalLM and kin). One small interface, so the generate workload and its quality check
do not care which: `logits(ids, cache)` continues the cached sequence and returns the last position's
next-token logits; `new_cache(spec, batch, max_tokens)` builds the cache a `CacheSpec` describes.

transformers is imported lazily, only for its models: the built-in path needs torch alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

from harness.models.kv_cache import CacheSpec, KVCache, dequantize, quantize


@dataclass(frozen=True)
class KVLayout:
    """What one cached token costs: per layer, kv_heads x head_dim keys and as many values."""

    layers: int
    kv_heads: int
    head_dim: int


def decoder_for(model: nn.Module) -> BuiltinDecoder | HFDecoder:
    if _is_hf(model):
        return HFDecoder(model)
    inner = getattr(model, "hf", None)  # harness's wrapper of a transformers model (models/hf_build.py)
    if isinstance(inner, nn.Module) and _is_hf(inner):
        return HFDecoder(inner)
    if isinstance(getattr(model, "blocks", None), nn.ModuleList) and hasattr(model, "hidden"):
        return BuiltinDecoder(model)
    raise TypeError(
        f"generate needs a model with a KV cache path: harness's Transformer or a transformers causal "
        f"LM (got {type(model).__name__})"
    )


def _is_hf(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "get_text_config")


class BuiltinDecoder:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        attn = model.blocks[0].attn
        self.layout = KVLayout(len(model.blocks), int(attn.n_kv_heads), int(attn.head_dim))

    def new_cache(self, spec: CacheSpec, batch: int, max_tokens: int) -> KVCache:
        return KVCache(spec, self.layout.layers, max_tokens)

    def logits(self, ids: torch.Tensor, kv: Any) -> torch.Tensor:
        # The LM head on the last position only, as transformers' generate does (logits_to_keep=1):
        # the prefill never holds (B, T, V) logits.
        h = self.model.hidden(ids, kv)
        out: torch.Tensor = self.model.lm_head(h[:, -1])
        return out  # (B, V)


class HFDecoder:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        cfg = model.config.get_text_config(decoder=True)
        self.config = cfg
        heads = int(cfg.num_attention_heads)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        self.layout = KVLayout(int(cfg.num_hidden_layers), int(kv_heads), int(head_dim))

    def new_cache(self, spec: CacheSpec, batch: int, max_tokens: int) -> Any:
        from transformers.cache_utils import (
            Cache,
            DynamicCache,
            DynamicSlidingWindowLayer,
            StaticLayer,
            StaticSlidingWindowLayer,
        )

        n = self.layout.layers
        if spec.bits is not None:
            if spec.storage == "static" or spec.window:
                raise ValueError(
                    "kv_cache_quantization on a transformers model keeps a dynamic, unwindowed cache; "
                    "drop static_cache / sliding_window_cache from this combination"
                )
            layer = int_quantized_layer_class()
            return Cache(layers=[layer(spec.bits, spec.group_size) for _ in range(n)])
        if spec.storage == "static":
            if spec.window:
                return Cache(
                    layers=[
                        StaticSlidingWindowLayer(max_cache_len=max_tokens, sliding_window=spec.window)
                        for _ in range(n)
                    ]
                )
            # Plain static layers, as the dynamic baseline's: StaticCache(config=...) would window every
            # layer of a config with `sliding_window` (Mistral's 4096) and the pair would differ in more
            # than the storage. A window is sliding_window_cache's, the same on both.
            return Cache(layers=[StaticLayer(max_cache_len=max_tokens) for _ in range(n)])
        if spec.window:
            return Cache(layers=[DynamicSlidingWindowLayer(sliding_window=spec.window) for _ in range(n)])
        return DynamicCache()

    def logits(self, ids: torch.Tensor, kv: Any) -> torch.Tensor:
        out = self.model(input_ids=ids, cache=kv, use_cache=True, logits_to_keep=1)
        logits: torch.Tensor = out.logits[:, -1]
        return logits


@cache
def int_quantized_layer_class() -> type:
    """A transformers cache layer storing K/V as int8/int4 codes with one scale per token, head and
    group (harness's own; transformers' QuantizedCache needs quanto or hqq for integers, and its CPU
    backend `fp8` is float8 per tensor). Per-token scales make the storage appendable: each new token
    is quantized once, nothing is re-quantized."""
    from transformers.cache_utils import DynamicLayer

    class IntQuantizedLayer(DynamicLayer):
        is_croppable = False

        def __init__(self, bits: int, group_size: int | None) -> None:
            super().__init__()
            self.bits, self.group_size = bits, group_size
            self.cumulative_length = 0
            self.codes: list[torch.Tensor] = []  # k codes, k scales, v codes, v scales

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            first = not self.is_initialized
            if first:
                self.lazy_initialization(key_states, value_states)
            group = self.group_size or key_states.size(-1)
            new = [*quantize(key_states, self.bits, group), *quantize(value_states, self.bits, group)]
            self.codes = (
                new if first else [torch.cat([o, n], dim=-2) for o, n in zip(self.codes, new, strict=True)]
            )
            self.cumulative_length += key_states.size(-2)
            if first:
                return key_states, value_states
            dt = key_states.dtype
            k = dequantize(self.codes[0], self.codes[1], self.bits, dt)
            return k, dequantize(self.codes[2], self.codes[3], self.bits, dt)

        def get_seq_length(self) -> int:
            return self.cumulative_length

    return IntQuantizedLayer
