from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from harness.techniques.base import Context, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn

    from harness.analysis.shape import Shape


class CrossLayerSharing(Technique):
    """Whole Transformer blocks shared across layers, ALBERT-style (Lan et al. 2019).

    Groups of `share_every` consecutive layers run one block (the group's first); by default all layers
    run one block. The depth (blocks applied per forward) is unchanged: the ModuleList keeps n_layers
    entries; the positions of a group are distinct Block objects holding the same submodules (LayerNorms,
    attention, MLP), and `model.parameters()` lists a shared tensor once.
    Saves: parameters, gradients and optimizer state of the dropped blocks, (L - L/k) x block each.
    Costs: nothing in time or activations (every layer still runs and keeps its activations for
    backward); the shared block's gradient is the sum over its uses. A different model, so losses differ.

    Acts in STRUCTURE with order -1 (before pruning, 0-9, and adapters, 10-19) rather than in CONFIG,
    because ModelConfig has no sharing field: the model is built unshared, so the build phase briefly
    holds the unshared blocks before they are dropped. Rewrites that walk `model.modules()` (pruning,
    LoRA) meet a shared submodule once and change it for every position; rewrites of `model.blocks[i]`
    and its attributes (adapters, checkpointing with any scope) act per position, because each position
    is its own Block object: a wrapper is never nested inside itself, and each layer may get its own adapter.
    """

    name: ClassVar[str] = "cross_layer_sharing"
    phase: ClassVar[Phase] = Phase.STRUCTURE

    class Config(TechniqueConfig):
        share_every: int | None = Field(default=None, ge=2)
        """Consecutive layers that share one block (the last group may be shorter); null: all layers."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        every = self.config.share_every
        shape.share_every = shape.cfg.n_layers if every is None else every
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:

        from harness.models.layout import blocks_or_raise

        blocks = blocks_or_raise(model, self.name)
        k = self.config.share_every or len(blocks)
        for i in range(len(blocks)):
            if i % k:
                # Layer i runs its group's first block; its own block is dropped with its weights.
                blocks[i] = share_children(blocks[(i // k) * k])
        return model


def share_children(block: nn.Module) -> nn.Module:
    """A new module of the block's class holding the same children and parameters (no copies), so a
    per-position rewrite (setattr on blocks[i]) does not reach the other positions."""
    from torch import nn

    cls: Any = type(block)
    shell: nn.Module = cls.__new__(cls)
    nn.Module.__init__(shell)
    for name, child in block.named_children():
        shell.add_module(name, child)
    for name, param in block.named_parameters(recurse=False):
        shell.register_parameter(name, param)
    # Plain attributes (none in harness's Block today) are shared by reference too.
    for name, value in vars(block).items():
        if not name.startswith("_") and name not in vars(shell):
            setattr(shell, name, value)
    return shell
