from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques._optimizer import OptimizerConfig, OptimizerTechnique
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

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.optimizer = "adamw"
        return None

    def build_optimizer(self, params: list[torch.nn.Parameter], ctx: Context) -> torch.optim.Optimizer:
        # foreach=False, as for the baseline: the multi-tensor path allocates whole-state temporaries.
        import torch

        return torch.optim.AdamW(
            params, lr=self.config.lr, weight_decay=self.config.weight_decay, foreach=False
        )
