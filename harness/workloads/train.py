from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.case import CaseSpec
from harness.data import case_batches, reference_weights
from harness.models.source import config_of
from harness.techniques._optimizer import chosen_implementation
from harness.techniques.base import Context, StepPlan, Technique
from harness.workloads.base import Session, Workload, build_model, build_optimizer

if TYPE_CHECKING:
    import torch


def plain_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    import torch

    from harness.models.transformer import next_token_loss

    logits = model(inputs)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != inputs.shape:
        # A factory module breaking the contract gets the contract, not a shape error deep in the loss.
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(
            f"the model returned {got} for ids {tuple(inputs.shape)}; it must return logits (B, T, V)"
        )
    return next_token_loss(logits, targets)


class TrainSession(Session):
    def __init__(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> None:
        cfg = config_of(case.model)
        # Fine-tune from the trained reference weights (when the case has them), read into fresh memory.
        weights = reference_weights(case, cfg, verify=False, mapped=False)
        self.model = build_model(cfg, techniques, ctx, weights)
        del weights
        self.model.train()
        self.optimizer = build_optimizer(self.model, techniques, ctx)
        self.device = ctx.device
        self.plan = StepPlan(loss_fn=plain_loss)
        for t in techniques:
            t.plan_step(self.plan, ctx)
        if case.batch_size % self.plan.micro_batches:
            raise ValueError(
                f"batch {case.batch_size} is not divisible into {self.plan.micro_batches} micro-batches"
            )
        self.batches = case_batches(case, n_steps, cfg.vocab_size, "train", ctx.device)
        self.samples_per_step = case.batch_size
        self.tokens_per_step = case.batch_size * case.seq_len

    def extra_metrics(self) -> dict[str, Any]:
        if "foreach" not in self.optimizer.defaults:  # bitsandbytes, torchao, ZeRO: no such choice
            return {}
        return chosen_implementation(self.optimizer, self.device)

    def step(self, i: int) -> float:
        """Forward + backward over the micro-batches, one optimizer step; returns the batch's mean loss."""
        inputs, targets = self.batches[i]
        k = self.plan.micro_batches
        total = 0.0
        scaler = self.plan.grad_scaler
        for x, y in zip(inputs.chunk(k), targets.chunk(k), strict=True):
            with self.plan.context():
                loss = self.plan.loss_fn(self.model, x, y) / k
            (scaler.scale(loss) if scaler is not None else loss).backward()
            total += float(loss.detach())
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        # set_to_none frees the gradients between steps, as every modern training loop does.
        self.optimizer.zero_grad(set_to_none=True)
        return total


class Train(Workload):
    """Forward + backward + optimizer step (AdamW unless a technique chooses) on next-token loss."""

    name: ClassVar[str] = "train"

    def setup(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> Session:
        return TrainSession(case, techniques, ctx, n_steps)
