from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.techniques.base import Context, Phase, Technique, TechniqueConfig


class CheckpointedBlock(nn.Module):
    """Runs `inner` under non-reentrant checkpointing: only its input is kept; the rest is recomputed."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        if not torch.is_grad_enabled():
            return self.inner(x)
        return checkpoint(self.inner, x, use_reentrant=False)


class ActivationCheckpointing(Technique):
    """Gradient (activation) checkpointing per Transformer block (Chen et al. 2016).

    Saves: a checkpointed block keeps only its input (B*T*C elements) instead of every intermediate
    (attention scores, MLP hidden, LayerNorm outputs); the recomputation happens one block at a time.
    Costs: about one extra forward of the checkpointed blocks (~+20-33 % step time).
    Exact: losses and gradients equal the baseline's (no dropout in the subject model).
    """

    name: ClassVar[str] = "activation_checkpointing"
    phase: ClassVar[Phase] = Phase.WRAP
    order: ClassVar[int] = 0  # before sharding, which wraps what this wrapped
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train", "distill"})
    exact: ClassVar[bool] = True

    class Config(TechniqueConfig):
        every_k_blocks: int = Field(default=1, ge=1)
        """Checkpoint blocks 0, k, 2k, ...: k=1 checkpoints every block; k=2 every second one."""

    config: Config

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        blocks = model.get_submodule("blocks")
        assert isinstance(blocks, nn.ModuleList)
        for i in range(0, len(blocks), self.config.every_k_blocks):
            blocks[i] = CheckpointedBlock(blocks[i])
        return model
