# mypy: disallow-subclassing-any=False
# (torch is untyped here, so nn.Module is Any to mypy; subclassing it is the point of CheckpointedBlock.)
"""The module activation_checkpointing wraps blocks in, and its selective policy. Kept apart from the
technique so that the technique module imports without torch (`harness validate` stays torch-free)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

Policy = Literal["full", "selective"]


def _ops(names: tuple[str, ...]) -> frozenset[Any]:
    # Some fused-attention ops exist only in some builds; skip the missing ones instead of failing.
    return frozenset(getattr(torch.ops.aten, n).default for n in names if hasattr(torch.ops.aten, n))


# Matmul-class ops whose outputs selective checkpointing keeps: they are the expensive part of the
# forward (recomputing them would cost most of a forward), while what they feed (bias adds, GELU/ReLU,
# softmax, LayerNorm, masking) is cheap elementwise work. Fused attention counts as a matmul: its output
# and log-sum-exp are O(T) per head and costly to recompute. torchtitan's selective-op policy saves a
# similar list.
SAVED_OPS: frozenset[Any] = _ops(
    (
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
)


def save_matmuls_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective checkpointing: keep matmul outputs, recompute everything else in backward."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts() -> tuple[Any, Any]:
    # A fresh pair per call: the contexts cache saved outputs between forward and recompute.
    contexts: tuple[Any, Any] = create_selective_checkpoint_contexts(save_matmuls_policy)
    return contexts


class CheckpointedBlock(nn.Module):
    """Runs `inner` under non-reentrant checkpointing.

    policy "full": only the input is kept; everything inside is recomputed in backward.
    policy "selective": the input and the outputs of matmul-class ops are kept; the rest is recomputed.
    """

    def __init__(self, inner: nn.Module, policy: Policy = "full") -> None:
        super().__init__()
        self.inner = inner
        self.policy = policy

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # transformers' layers take keyword arguments (masks, rotary cos/sin) beside the hidden states;
        # non-reentrant checkpointing passes them through.
        if not torch.is_grad_enabled():
            return self.inner(*args, **kwargs)
        if self.policy == "selective":
            return checkpoint(
                self.inner, *args, use_reentrant=False, context_fn=_selective_contexts, **kwargs
            )
        return checkpoint(self.inner, *args, use_reentrant=False, **kwargs)
