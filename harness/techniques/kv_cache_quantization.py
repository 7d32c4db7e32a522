from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from harness.techniques.base import Context, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from harness.analysis.shape import Shape
    from harness.models.kv_cache import CacheSpec


class KvCacheQuantization(Technique):
    """Keys and values stored as int8 or int4 codes with one scale per token, head and group of channels
    (symmetric absmax; int4 packs two codes per byte), dequantized when attention reads them.

    Saves: KV-cache bytes per element go from the dtype's width w to bits/8 + w/group_size (the scales,
    kept in the model's dtype): int8 in bf16 with head_dim 64 stores 1 + 2/64 bytes per element, 0.516 of
    bf16; in fp32 1 + 4/64, 0.266 of fp32. Per-token scales make the cache appendable: each new token is
    quantized once (harness's own layer on both sources; transformers' QuantizedCache needs quanto or
    hqq for integer formats, and its CPU-ready fp8 backend is float8 per tensor).
    Costs: quantization error in attention (measured as KL and top-1 agreement against the fp32 run); a
    dequantize of the whole cache per decode step (time, and a transient full-width copy per layer).
    The prefill attends to the prompt's unquantized keys/values, as transformers' quantized caches do.
    """

    name: ClassVar[str] = "kv_cache_quantization"
    phase: ClassVar[Phase] = Phase.STEP
    workloads: ClassVar[frozenset[str] | None] = frozenset({"generate"})

    class Config(TechniqueConfig):
        bits: Literal[8, 4] = 8
        """Stored integer width of keys and values."""
        group_size: int | None = Field(default=None, ge=2)
        """Channels per scale; None: the head size (one scale per token per head). Must divide it."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.kv_bits = self.config.bits
        shape.kv_group = self.config.group_size
        return None

    def combination_reason(self, others: list[Technique], ctx: Context) -> str | None:
        # On a transformers model the quantized layer is harness's own dynamic one (decoding.new_cache):
        # it has no static or windowed form, known before a process is spent.
        shaped = sorted(t.name for t in others if t.name in ("static_cache", "sliding_window_cache"))
        if ctx.model_source == "hf" and shaped:
            drop = ", ".join(shaped)
            return f"on a transformers model the quantized cache is dynamic and unwindowed; drop {drop}"
        return None

    def configure_cache(self, spec: CacheSpec, ctx: Context) -> CacheSpec:
        return spec.with_(bits=self.config.bits, group_size=self.config.group_size)
