from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.models.source import ModelSource
from harness.techniques.base import Context, Environment, Phase, Technique

if TYPE_CHECKING:
    from harness.analysis.shape import Shape


class SdpaAttention(Technique):
    """Fused attention (`torch.nn.functional.scaled_dot_product_attention`) instead of the explicit path.

    Saves: the (B, nh, T, T) score and probability tensors the explicit path keeps for backward; the
    fused kernel (flash / memory-efficient on CUDA, flash on CPU) keeps O(T) per head (output and
    log-sum-exp), so attention memory becomes linear in sequence length (Dao et al. 2022).
    Costs: nothing in quality (exact up to float rounding); usually faster.
    """

    name: ClassVar[str] = "sdpa_attention"
    phase: ClassVar[Phase] = Phase.CONFIG
    exact: ClassVar[bool] = True
    # Same math, other summation order: ~1.6e-5 relative loss drift seen over 4 steps in fp32.
    exact_rtol: ClassVar[float] = 1e-4

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.model_source == "factory":
            return "a factory module's attention is its own: call scaled_dot_product_attention in your module"
        return None

    def configure_model(self, cfg: ModelSource, ctx: Context) -> ModelSource:
        return cfg.replace(attention="sdpa")

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.cfg = shape.cfg.replace(attention="sdpa")
        return None
