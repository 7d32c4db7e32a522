from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from harness.analysis.shape import BlockParts, Shape, StepFlops
from harness.techniques.base import Context, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn


Policy = Literal["full", "selective"]
Scope = Literal["block", "mlp", "attention"]


class ActivationCheckpointing(Technique):
    """Gradient (activation) checkpointing of Transformer blocks (Chen et al. 2016).

    Saves: a fully checkpointed block keeps only its input (B*T*C elements) instead of every
    intermediate (attention scores, MLP hidden, LayerNorm outputs); recomputation runs one block at a time.
    Selective checkpointing keeps the matmul outputs too and recomputes only the cheap elementwise ops,
    so it saves less (measured on CPU: full 0.48 of the baseline's step peak, selective 0.83) but costs
    almost no time. `scope` narrows checkpointing to the MLP (its 4h-wide hidden is the biggest
    activation after the attention scores) or to attention (which holds the (B, nh, T, T) scores).
    Costs: about one extra forward of the checkpointed parts (~+20-33 % step time for full).
    Exact: losses and gradients equal the baseline's (no dropout in the subject model).
    """

    name: ClassVar[str] = "activation_checkpointing"
    phase: ClassVar[Phase] = Phase.WRAP
    needs_training: ClassVar[bool | None] = True
    exact: ClassVar[bool] = True

    class Config(TechniqueConfig):
        every_k_blocks: int = Field(default=1, ge=1)
        """Checkpoint blocks 0, k, 2k, ...: k=1 checkpoints every block; k=2 every second one."""
        policy: Policy = "full"
        """full: recompute everything inside; selective: keep matmul outputs, recompute the rest."""
        scope: Scope = "block"
        """What is checkpointed inside a chosen block: the whole block, only its MLP, or only attention."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        if shape.frozen_base:
            return "a frozen base with checkpointing or accumulation is not modelled"
        shape.checkpointed = frozenset(range(0, shape.cfg.n_layers, self.config.every_k_blocks))
        shape.saved_rule = self.kept_bytes
        return None

    def kept_bytes(self, parts: BlockParts) -> int:
        """What a checkpointed block keeps for backward: the checkpointed part's input (a block's input,
        or the LayerNorm output a sublayer takes) in place of that part's saved tensors, plus, under the
        selective policy, the matmul outputs the policy saves."""
        selective = self.config.policy == "selective"
        if self.config.scope == "block":
            return parts.stream + (parts.attention_matmuls + parts.mlp_matmuls if selective else 0)
        if self.config.scope == "mlp":
            dropped, matmuls = parts.mlp_input + parts.mlp, parts.mlp_matmuls
        else:
            dropped, matmuls = parts.attention_input + parts.attention, parts.attention_matmuls
        return parts.total - dropped + parts.stream + (matmuls if selective else 0)

    def adjust_flops(self, flops: StepFlops, shape: Shape) -> str | None:
        """Recomputation in backward: the checkpointed part's forward matmuls again, except those whose
        outputs are kept (selective: every matmul) and the last one, whose output backward never needs
        (non-reentrant checkpointing stops once the tensors backward needs are rebuilt)."""
        if shape.workload != "train" or self.config.policy == "selective":
            return None
        b = flops.block
        per_block = {
            "block": b.qkv + b.attention + b.out_proj + b.fc1,  # fc2 ends the block: not re-run
            "mlp": b.fc1,
            "attention": b.qkv + b.attention,  # out_proj ends the sublayer
        }[self.config.scope]
        flops.recomputed += len(range(0, shape.cfg.n_layers, self.config.every_k_blocks)) * per_block
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        from harness.models.layout import blocks_or_raise, layout_of, part_attr_or_raise
        from harness.techniques._checkpoint_wrap import CheckpointedBlock

        layout = layout_of(model)
        blocks = blocks_or_raise(model, self.name)
        wrap = functools.partial(CheckpointedBlock, policy=self.config.policy)
        part = None
        if self.config.scope != "block":
            part = part_attr_or_raise(layout, "mlp" if self.config.scope == "mlp" else "attn", self.name)
        for i in range(0, len(blocks), self.config.every_k_blocks):
            if part is None:
                blocks[i] = wrap(blocks[i])
            else:
                setattr(blocks[i], part, wrap(getattr(blocks[i], part)))
        return model
