from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ClassVar

from harness.techniques._adapter_rules import bottleneck_saved_bytes, bottleneck_shapes
from harness.techniques._adapters import (
    BottleneckConfig,
    add_after,
    d_model_of,
    first_weight,
    freeze_base,
)
from harness.techniques.base import Context, Phase, Technique

if TYPE_CHECKING:
    from torch import nn

    from harness.analysis.shape import Shape


class BottleneckAdapter(Technique):
    """Houlsby adapters (Houlsby et al. 2019): per layer, a d -> r -> d bottleneck (GELU, residual) on
    the attention output and one on the MLP output, before each residual add; the base model is frozen
    and only the adapters train.

    Saves: gradients and AdamW state of the whole base (16 -> 4 bytes per frozen fp32 parameter), and
    the inputs frozen Linear layers would keep for their weight gradients.
    Costs: 2 x L x (2*d*r + r + d) new parameters, their activations (B*T*r per adapter), a little
    time. Adapters start as the identity (up projection zero), so the first loss is the baseline's.
    Combines with lora and shared_adapter (each adds its trainables; the base stays frozen) and with
    cross_layer_sharing (each position keeps its own adapters over the shared block).
    """

    name: ClassVar[str] = "bottleneck_adapter"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    freezes_base: ClassVar[bool] = True
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train", "infer"})

    class Config(BottleneckConfig):
        """bottleneck (r) and also_train, as for every bottleneck adapter."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        if reason := shape.freeze_base(list(self.config.also_train)):
            return reason
        r = self.config.bottleneck
        shape.adapter_shapes += bottleneck_shapes(shape.cfg.d_model, r) * 2 * shape.cfg.n_layers
        shape.first_trainable = min(shape.first_trainable, 1)  # the adapter after attention
        shape.adapter_saved_bytes += 2 * bottleneck_saved_bytes(shape, r)
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        from harness.techniques._adapter_modules import Bottleneck

        make = functools.partial(Bottleneck, d_model_of(model), self.config.bottleneck, first_weight(model))
        for part in ("attn", "mlp"):
            add_after(model, part, make, self.name)
        freeze_base(model, self.config.also_train)
        return model
