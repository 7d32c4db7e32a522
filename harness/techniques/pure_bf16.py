from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.techniques.base import Context, Environment, Phase, Technique

if TYPE_CHECKING:
    from torch import nn

    from harness.analysis.shape import Shape, StepFlops


class PureBf16(Technique):
    """Pure bf16 training: weights, gradients and optimizer state all in bfloat16 (no fp32 master copy).

    Saves: every per-parameter byte halves (AdamW: 16 -> 8 bytes per parameter for weights, grads and
    two moments) and so do activations (measured on CPU: step peak 0.64 of the fp32 baseline).
    Costs: bf16 keeps 8 mantissa bits, so small updates round away (w + lr*u == w once lr*u < w/256);
    long runs drift from fp32 without stochastic rounding or Kahan summation, which this does not add.
    Same effect as `defaults.dtype: bfloat16`, as a technique, so one suite can compare it against fp32.

    Phase: STRUCTURE, last (order 100): it casts whatever the structural rewrites produced (adapters
    included), and runs before WRAP so that checkpointing and sharding wrap bf16 parameters. Module.to
    casts floating-point tensors only, so integer-packed quantized weights are left as they are.
    """

    name: ClassVar[str] = "pure_bf16"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    conflicts: ClassVar[dict[str, str]] = {
        "autocast": "autocast mixes precision over fp32 weights; with pure bf16 there is nothing left to mix",
    }

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.dtype != "float32":
            return f"this case's weights are already {ctx.dtype} (defaults.dtype): pure_bf16 changes nothing"
        return None

    def adjust_prediction(self, shape: Shape) -> str | None:
        if shape.param_bytes != 4:
            return "the case's weights are not fp32"
        shape.param_bytes = shape.compute_bytes = 2
        return None

    def adjust_flops(self, flops: StepFlops, shape: Shape) -> str | None:
        flops.compute_dtype = "bfloat16"  # every matmul runs on bf16 weights and activations
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch

        return model.to(torch.bfloat16)
