from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar, Literal

from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn


FP8_CAPABILITY = (8, 9)  # Ada (L4, RTX 4090) and Hopper (H100/H200) have fp8 tensor cores


class Fp8Training(Technique):
    """fp8 matmuls in training through torchao's float8 (`convert_to_float8_training`).

    Every eligible nn.Linear becomes a Float8Linear: its forward and both backward matmuls cast their
    operands to float8 (e4m3, dynamically scaled) and run on fp8 tensor cores.
    Saves: little memory by itself: torchao keeps the high-precision input and weight for backward and
    re-casts them there, so activations stay 16/32-bit; transient fp8 copies are added. The gains are
    matmul throughput (up to ~2x over bf16 on H100) and, under FSDP2 with float8 all-gather, half the
    weight traffic. Costs: fp8 rounding of matmul operands (losses differ from bf16 slightly).
    Needs a CUDA GPU with compute capability >= 8.9 and torchao.

    Phase: STRUCTURE after pure_bf16 (order 110), so it swaps the final Linear modules, and before WRAP,
    so checkpointing and sharding wrap Float8Linear (torchtitan converts before it parallelizes).
    """

    name: ClassVar[str] = "fp8_training"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    needs_training: ClassVar[bool | None] = True

    class Config(TechniqueConfig):
        recipe: Literal["tensorwise", "rowwise"] = "tensorwise"
        """torchao's scaling recipe: one scale per tensor (fastest) or per row (more accurate)."""
        include_lm_head: bool = False
        """Also run the LM head in fp8; off by default, as torchtitan does (the logits are sensitive)."""

    config: Config

    def preload(self) -> None:
        # torchao imports hundreds of modules: not the model's memory.
        importlib.import_module("torchao")

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        need = "needs a CUDA GPU with compute capability >= 8.9 (H100/L4/...)"
        if not env.cuda_available:
            return f"{need}; this machine has none"
        cap = env.cuda_capability
        if cap is None or cap < FP8_CAPABILITY:
            have = f"{cap[0]}.{cap[1]}" if cap else "an unknown capability"
            return f"{need}; this machine's {env.cuda_device_name or 'GPU'} has {have}"
        if ctx.device != "cuda":
            return f"{need}; this case runs on {ctx.device} (set defaults.device: cuda)"
        if not env.has_module("torchao"):
            return "needs the torchao package (pip install torchao)"
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        # Imported by name: an optional package, untyped to mypy.
        float8 = importlib.import_module("torchao.float8")
        config = float8.Float8LinearConfig.from_recipe_name(self.config.recipe)
        converted: nn.Module = float8.convert_to_float8_training(
            model, module_filter_fn=self._eligible, config=config
        )
        return converted

    def _eligible(self, module: nn.Module, fqn: str) -> bool:
        # Plain nn.Linear only: quantized layers (bitsandbytes' Linear8bitLt, ...) subclass it but hold
        # packed integer weights. fp8 GEMMs need both dimensions divisible by 16.
        from torch import nn

        if type(module) is not nn.Linear or module.in_features % 16 or module.out_features % 16:
            return False
        return self.config.include_lm_head or fqn.split(".")[-1] != "lm_head"
