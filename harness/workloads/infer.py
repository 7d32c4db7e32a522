from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.case import CaseSpec
from harness.data import case_batches, reference_weights
from harness.models.source import config_of
from harness.techniques.base import Context, StepPlan, Technique
from harness.workloads.base import Session, Workload, build_model
from harness.workloads.train import plain_loss

if TYPE_CHECKING:
    pass


class InferSession(Session):
    def __init__(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> None:
        cfg = config_of(case.model)
        weights = reference_weights(case, cfg, verify=False, mapped=False)  # as a user loads them
        self.model = build_model(cfg, techniques, ctx, weights)
        del weights  # the replaced fp32 tensors must not outlive the build
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # STEP techniques (autocast) apply to inference too; the loss function is the plain one.
        self.plan = StepPlan(loss_fn=plain_loss)
        for t in techniques:
            t.plan_step(self.plan, ctx)
        self.batches = case_batches(case, n_steps, cfg.vocab_size, "train", ctx.device)
        self.samples_per_step = case.batch_size
        self.tokens_per_step = case.batch_size * case.seq_len

    def step(self, i: int) -> float:
        """One forward (prefill) over the batch without autograd; returns the next-token loss."""
        import torch

        inputs, targets = self.batches[i]
        with torch.inference_mode(), self.plan.context():
            return float(plain_loss(self.model, inputs, targets))


class Infer(Workload):
    """Forward / prefill of a batch without gradients (inference mode)."""

    name: ClassVar[str] = "infer"
    trains: ClassVar[bool] = False

    def setup(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> Session:
        return InferSession(case, techniques, ctx, n_steps)
