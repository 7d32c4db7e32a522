from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, ClassVar

from harness.techniques.base import Context, Environment, Phase, StepPlan, Technique

if TYPE_CHECKING:
    pass


class ActivationOffloading(Technique):
    """Move tensors saved for backward to pinned host memory during forward, and back in backward.

    Uses `torch.autograd.graph.save_on_cpu(pin_memory=True)` around each micro-batch's forward.
    Saves: on CUDA, device memory for every saved activation (only weights, gradients, optimizer state
    and transients stay on the device); host memory grows by the same amount.
    Costs: a device-to-host copy of every saved tensor in forward and back in backward, over PCIe,
    synchronous here (no overlap with compute), so steps slow down in proportion to activation bytes.
    Tensors saved inside checkpointed regions are not offloaded (checkpointing's own hooks take them).
    Exact: the same values come back.
    """

    name: ClassVar[str] = "activation_offloading"
    phase: ClassVar[Phase] = Phase.STEP
    needs_training: ClassVar[bool | None] = True
    exact: ClassVar[bool] = True

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.device != "cuda":
            return "moves nothing on CPU: activations already live in host memory"
        return None

    def plan_step(self, plan: StepPlan, ctx: Context) -> None:
        plan.contexts.append(functools.partial(_save_on_cpu, pin_memory=True))


def _save_on_cpu(pin_memory: bool) -> contextlib.AbstractContextManager[Any]:
    import torch

    hooks: contextlib.AbstractContextManager[Any] = torch.autograd.graph.save_on_cpu(pin_memory=pin_memory)
    return hooks
