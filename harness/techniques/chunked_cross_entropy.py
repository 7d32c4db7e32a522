from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from harness.techniques.base import Context, Phase, StepPlan, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.analysis.shape import Shape


class ChunkedCrossEntropy(Technique):
    """LM head + cross-entropy over chunks of tokens, so the (B, T, V) logits never exist at once.

    The plain loss keeps the (B*T, V) fp32 log-softmax output for backward and, in backward, two more
    (B*T, V) gradient buffers: with a large vocabulary that is the biggest tensor of the step
    (57 % of a fully checkpointed step's peak in docs/techniques.md). Here each chunk's
    projection + loss runs under checkpointing: forward keeps only the chunk's hidden states (a view of
    the (B, T, C) final hidden states, so nothing new), and backward recomputes one chunk's logits at a
    time. Saves: (B*T*V) -> (B*T*V / chunks) for the head's saved tensors and gradient buffers.
    Costs: the head's matmul runs twice (forward and recompute), about 2*B*T*C*V extra FLOPs.
    Exact: the same sum, in a different order (equal to the plain loss within float rounding).
    """

    name: ClassVar[str] = "chunked_cross_entropy"
    phase: ClassVar[Phase] = Phase.STEP
    # Only the train workload's loss is next-token cross-entropy; distillation's loss is its own.
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train"})
    exact: ClassVar[bool] = True

    class Config(TechniqueConfig):
        chunks: int = Field(default=8, ge=1)
        """Chunks the B*T tokens of a micro-batch are split into; peak head memory falls ~1/chunks."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.head_chunks = self.config.chunks
        return None

    def plan_step(self, plan: StepPlan, ctx: Context) -> None:
        chunks = self.config.chunks

        def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return chunked_loss(model, inputs, targets, chunks)

        plan.loss_fn = loss_fn


def hidden_and_head(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """The subject model's final-hidden-states entry and LM head, inside whatever wrapped it (adapters
    rewrite submodules; WRAP techniques wrap blocks). harness.models.layout finds them on the built-in
    Transformer, a transformers model, or a factory module that has `hidden(ids)` and `lm_head`.

    Calling them directly bypasses an outer wrapper's forward, which is fine for wrappers that only
    rewrite submodules, not for ones whose forward does work (DDP).
    """

    from harness.models.layout import layout_of
    from harness.models.source import UnsupportedModel

    layout = layout_of(model)
    if layout.hidden is None or layout.lm_head is None:
        raise UnsupportedModel(
            f"chunked_cross_entropy needs the model's final hidden states and head: "
            f"{type(model).__name__} has no `hidden(ids)` method and `lm_head` module (see docs/models.md)"
        )
    return layout.hidden, layout.lm_head


def chunked_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunks: int) -> torch.Tensor:
    """Mean next-token cross-entropy, equal to `next_token_loss(model(inputs), targets)`."""
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden, head = hidden_and_head(model)
    h = hidden(inputs)  # (B, T, C)
    flat_h = h.reshape(-1, h.size(-1))  # (B*T, C)
    flat_y = targets.reshape(-1)  # (B*T,)
    total = flat_h.new_zeros((), dtype=torch.float32)
    for h_c, y_c in zip(flat_h.chunk(chunks), flat_y.chunk(chunks), strict=True):
        if torch.is_grad_enabled():
            # Without checkpointing autograd would keep every chunk's log-softmax, saving nothing.
            total = total + checkpoint(_chunk_loss_sum, head, h_c, y_c, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(head, h_c, y_c)
    return total / flat_y.numel()


def _chunk_loss_sum(head: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    logits = head(h)  # (chunk, V)
    return F.cross_entropy(logits.float(), y, reduction="sum")
