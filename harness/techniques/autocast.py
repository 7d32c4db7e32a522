from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from harness.analysis.shape import DTYPE_BYTES
from harness.techniques.base import Context, Environment, Phase, StepPlan, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch

    from harness.analysis.shape import Shape, StepFlops


class Autocast(Technique):
    """Mixed precision through `torch.autocast` (Micikevicius et al. 2018).

    Saves: matmul inputs and outputs kept for backward are 16-bit instead of 32-bit, so activations
    shrink (up to ~2x on them); weights, gradients and AdamW state stay fp32 (16 B/param either way).
    Costs: casts on every op; bf16 has 8 mantissa bits, so losses differ slightly from fp32.
    fp16 needs a gradient scaler against underflow and is offered on CUDA only: a CPU without fp16
    matrix units emulates it (~150x slower here), which is no meaningful benchmark.
    """

    name: ClassVar[str] = "autocast"
    phase: ClassVar[Phase] = Phase.STEP

    class Config(TechniqueConfig):
        dtype: Literal["bfloat16", "float16"] = "bfloat16"
        """The lower precision that autocast-eligible ops (matmuls, linear layers) run in."""

    config: Config

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if self.config.dtype == "float16" and ctx.device != "cuda":
            return (
                "fp16 autocast needs CUDA: on CPU fp16 matmuls are emulated (~150x slower), not a benchmark"
            )
        if ctx.dtype != "float32":
            return f"autocast mixes precision over fp32 weights; this case's weights are already {ctx.dtype}"
        return None

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.compute_bytes = DTYPE_BYTES[self.config.dtype]
        return None

    def adjust_flops(self, flops: StepFlops, shape: Shape) -> str | None:
        flops.compute_dtype = self.config.dtype
        return None

    def plan_step(self, plan: StepPlan, ctx: Context) -> None:
        import torch

        dtype = getattr(torch, self.config.dtype)
        plan.contexts.append(functools.partial(_autocast, ctx.device, dtype))
        if self.config.dtype == "float16":
            plan.grad_scaler = torch.amp.GradScaler(ctx.device)


def _autocast(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    import torch

    ctx: contextlib.AbstractContextManager[Any] = torch.autocast(device_type=device, dtype=dtype)
    return ctx
