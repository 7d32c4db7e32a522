from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from harness.analysis.shape import Shape
    from harness.models.kv_cache import CacheSpec


class SlidingWindowCache(Technique):
    """Keep only the last `window` tokens' keys and values; each new token attends to those alone
    (Mistral's sliding-window attention at decode time; StreamingLLM without attention sinks).

    Saves: the KV cache stops growing at `window` tokens: 2 x layers x kv_heads x head_dim x
    min(window, tokens) x batch x bytes, and each decode step's attention reads at most `window` keys.
    Costs: every token before the window is forgotten: exact while prompt + generated <= window, a
    quality loss after (measured as KL and top-1 agreement against the full-cache fp32 run). The prefill
    still attends over the whole prompt; only what the cache keeps is cut.
    """

    name: ClassVar[str] = "sliding_window_cache"
    phase: ClassVar[Phase] = Phase.STEP
    workloads: ClassVar[frozenset[str] | None] = frozenset({"generate"})

    class Config(TechniqueConfig):
        window: int = Field(default=256, ge=1)
        """Tokens of keys/values kept per layer."""

    config: Config

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.model_source == "hf" and self.config.window < 2:
            # DynamicSlidingWindowLayer stores keys[-window + 1:]: at window 1 that is [0:], every token.
            return "window 1 on a transformers model: its sliding-window cache then keeps every token; use 2+"
        return None

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.kv_window = self.config.window
        return None

    def configure_cache(self, spec: CacheSpec, ctx: Context) -> CacheSpec:
        return spec.with_(window=self.config.window)
