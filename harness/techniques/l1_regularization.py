from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques import _util
from harness.techniques.base import Context, LossFn, Phase, StepPlan, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn


class L1Regularization(Technique):
    """Training on L(w) + lambda * ||w||_1 over the Linear weights (the seed's 4.3.1).

    Saves: nothing by itself. The L1 term's gradient, lambda * sign(w), pushes weights to 0, so a later
    magnitude pruning (unstructured_pruning) removes weights that matter less. `metrics` reports the
    sparsity reached: the fraction of targeted weights with |w| below `threshold`.
    Costs: one L1 norm per targeted weight per micro-batch (`vector_norm(w, 1)` keeps no temporary of
    the weight's size), and the recorded loss includes the penalty, so it is not comparable with the
    baseline's.
    """

    name: ClassVar[str] = "l1_regularization"
    phase: ClassVar[Phase] = Phase.STEP
    # It edits plan.loss_fn, which the train workload calls; other workloads would ignore it.
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train"})

    class Config(TechniqueConfig):
        lambda_: float = Field(default=1e-5, gt=0.0)
        """Penalty weight lambda on the sum of |w| (a sum, not a mean: it scales with the model)."""
        threshold: float = Field(default=1e-3, gt=0.0)
        """|w| below this counts as zero in the reported sparsity."""
        include_lm_head: bool = True
        """Also penalise the (untied) LM head."""

    config: Config

    def plan_step(self, plan: StepPlan, ctx: Context) -> None:
        plan.loss_fn = functools.partial(
            _penalised, plan.loss_fn, self.config.lambda_, self.config.include_lm_head
        )

    def metrics(self, model: nn.Module) -> dict[str, float | int]:
        import torch

        weights = [
            _util.attr_tensor(m, "weight")
            for _, m in _util.target_linears(model, self.config.include_lm_head)
        ]
        total = sum(w.numel() for w in weights)
        below = sum(int((w.detach().abs() < self.config.threshold).sum()) for w in weights)
        return {
            "l1_norm": float(sum(float(torch.linalg.vector_norm(w.detach().float(), 1)) for w in weights)),
            "l1_sparsity_fraction": below / total if total else 0.0,
            "l1_sparsity_threshold": self.config.threshold,
        }


def l1_norm(model: nn.Module, include_lm_head: bool) -> torch.Tensor:
    """Sum of |w| over the targeted Linear weights, differentiable, accumulated in fp32."""
    import torch

    weights = [_util.attr_tensor(m, "weight") for _, m in _util.target_linears(model, include_lm_head)]
    return torch.stack([torch.linalg.vector_norm(w, 1, dtype=torch.float32) for w in weights]).sum()


def _penalised(
    loss_fn: LossFn, lam: float, include_lm_head: bool, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    return loss_fn(model, x, y) + lam * l1_norm(model, include_lm_head)
