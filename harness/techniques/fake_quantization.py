from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from harness.techniques import _util
from harness.techniques.base import Context, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn


class FakeQuantization(Technique):
    """Uniform symmetric fake quantization of the Linear weights (the seed's 4.3.2):
    s = max|w| / (2^(b-1) - 1), w_q = clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1) * s,
    with max|w| over the whole tensor (per_tensor) or over each output row (per_channel).

    Saves: nothing: the quantized values stay in the model's dtype. It measures what b-bit weights do to
    the loss; `metrics` gives the bytes the same weights would take packed at b bits
    (`packed_weight_bytes`, plus one fp32 scale per tensor or row).
    Costs: inference: none after the one-time rounding in place. Training (straight-through estimator:
    the forward uses w_q, the gradient reaches w unchanged): w_q is recomputed every forward and kept for
    backward, about one extra weight copy per layer.
    """

    name: ClassVar[str] = "fake_quantization"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    quantizes: ClassVar[bool] = True
    conflicts: ClassVar[dict[str, str]] = {
        "fp8_training": "fp8 casts of the fake-quantized weights: two weight quantizers on one matmul",
    }

    class Config(TechniqueConfig):
        bits: int = Field(default=8, ge=2, le=16)
        """b: the quantized weights take at most 2^b - 1 distinct values per tensor (or row)."""
        granularity: Literal["per_tensor", "per_channel"] = "per_tensor"
        """One scale per weight tensor, or one per output row (channel)."""
        include_lm_head: bool = True
        """Also quantize the (untied) LM head."""

    config: Config

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch
        from torch.nn.utils import parametrize

        from harness.techniques._straight_through import StraightThrough, fake_quantize

        per_channel = self.config.granularity == "per_channel"
        for _, module in _util.target_linears(model, self.config.include_lm_head):
            weight = module.get_parameter("weight")
            if ctx.workload == "infer" or not weight.requires_grad:
                with torch.no_grad():  # frozen: round once, in place; no extra memory
                    weight.copy_(fake_quantize(weight, self.config.bits, per_channel))
            else:
                parametrize.register_parametrization(
                    module, "weight", StraightThrough(self.config.bits, per_channel)
                )
        return model

    def metrics(self, model: nn.Module) -> dict[str, float | int]:
        per_channel = self.config.granularity == "per_channel"
        targets = _util.target_linears(model, self.config.include_lm_head)
        weights = [_util.attr_tensor(m, "weight").detach() for _, m in targets]
        scales = sum(w.shape[0] if per_channel else 1 for w in weights)
        numel = sum(w.numel() for w in weights)
        return {
            "max_distinct_values": max((_distinct(w, per_channel) for w in weights), default=0),
            "weight_storage_bytes": sum(_util.tensor_bytes(w) for w in weights),
            "packed_weight_bytes": math.ceil(numel * self.config.bits / 8) + 4 * scales,
        }


def _distinct(w: torch.Tensor, per_channel: bool) -> int:
    """Distinct values in the tensor, or the most in any one row."""
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    ordered = rows.sort(dim=1).values
    return int(((ordered[:, 1:] != ordered[:, :-1]).sum(dim=1) + 1).max())
