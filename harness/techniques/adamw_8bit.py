from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar, Literal

from harness.techniques._optimizer import OptimizerConfig, OptimizerTechnique
from harness.techniques.base import Context, Environment

if TYPE_CHECKING:
    import torch

    from harness.analysis.shape import Shape

# torchao's low-bit optimizers compile their step with torch.compile; on a 2-core CPU the first step
# took 47-73 s (docs/techniques.md), which would swamp any benchmark of a few steps.
TORCHAO_CPU = "torchao's low-bit AdamW compiles its step (first step 47-73 s on a 2-core CPU); run it on CUDA"


class AdamW8bit(OptimizerTechnique):
    """AdamW with both moments block-wise quantized to 8 bits (Dettmers et al. 2021).

    Saves: optimizer state falls from 8 to about 2 bytes per parameter (plus one fp32 absmax per block);
    tensors below a size threshold stay 32-bit (measured on CPU with bitsandbytes: step peak 0.89 of the
    AdamW baseline). Costs: quantization error in the moments (same accuracy in the paper), and a
    dequantize / requantize per step.
    Backends: bitsandbytes (`bnb.optim.AdamW8bit`, runs on CPU and CUDA) or torchao
    (`torchao.optim.AdamW8bit`, compiled; CUDA only here, see TORCHAO_CPU).
    """

    name: ClassVar[str] = "adamw_8bit"

    class Config(OptimizerConfig):
        backend: Literal["bitsandbytes", "torchao"] = "bitsandbytes"
        """Which library's 8-bit AdamW to use."""

    config: Config

    def preload(self) -> None:
        # bitsandbytes / torchao import hundreds of modules: not the model's memory.
        importlib.import_module(self.config.backend)

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if not env.has_module(self.config.backend):
            return f"needs the {self.config.backend} package (pip install {self.config.backend})"
        if self.config.backend == "torchao" and ctx.device != "cuda":
            return TORCHAO_CPU
        return None

    def adjust_prediction(self, shape: Shape) -> str | None:
        if self.config.backend != "bitsandbytes":
            return "only bitsandbytes' state layout is modelled (torchao's differs)"
        shape.optimizer = "adamw_8bit"
        return None

    def build_optimizer(self, params: list[torch.nn.Parameter], ctx: Context) -> torch.optim.Optimizer:
        # Imported by name: optional packages, untyped to mypy.
        module = "torchao.optim" if self.config.backend == "torchao" else "bitsandbytes.optim"
        opt: torch.optim.Optimizer = importlib.import_module(module).AdamW8bit(params, lr=self.config.lr)
        return opt
