from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques._optimizer import (
    FOR_LOOP_ONLY,
    Implementation,
    OptimizerConfig,
    OptimizerTechnique,
    implementation_kwargs,
)
from harness.techniques.base import Context

if TYPE_CHECKING:
    import torch

    from harness.analysis.shape import Shape


class AdamW(OptimizerTechnique):
    """AdamW named explicitly: the baseline's optimizer, with its learning rate and weight decay as options.

    Saves nothing: two moments per parameter (8 bytes per fp32 parameter). It exists so that a suite can
    compare optimizers side by side under one naming, and vary AdamW's settings.
    """

    name: ClassVar[str] = "adamw"
    exact: ClassVar[bool] = True
    steps_dtensor_shards: ClassVar[bool] = (
        True  # with the defaults it is the baseline's optimizer, step for step
    )

    class Config(OptimizerConfig):
        weight_decay: float = Field(default=0.01, ge=0.0)
        """Decoupled weight decay (torch's AdamW default, as the baseline)."""
        implementation: Implementation = "default"
        """for_loop, foreach or fused; default: torch's choice for the device (for_loop on CPU, foreach on
        CUDA), as users get it. foreach allocates temporaries for a whole group of tensors at once."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        if self.config.implementation in ("foreach", "fused"):
            return FOR_LOOP_ONLY
        shape.optimizer = "adamw"
        return None

    def build_optimizer(self, params: list[torch.nn.Parameter], ctx: Context) -> torch.optim.Optimizer:
        import torch

        kwargs = implementation_kwargs(self.config.implementation)
        return torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay, **kwargs)
