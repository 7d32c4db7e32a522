from __future__ import annotations

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


class SharedAdapter(Technique):
    """One bottleneck adapter (d -> r -> d, GELU, residual) shared by every layer, on each MLP output
    before the residual add (Pfeiffer et al. 2020's single-adapter placement); the base model is frozen
    and only the adapter trains.

    Saves: gradients and AdamW state of the whole base, and the inputs frozen Linear layers would keep
    for weight gradients; the adapter is 2*d*r + r + d parameters whatever the depth.
    Costs: the adapter's activations at every layer (B*T*r each), a little time. It starts as the
    identity (up projection zero), so the first loss is the baseline's.
    """

    name: ClassVar[str] = "shared_adapter"
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
        shape.adapter_shapes += bottleneck_shapes(shape.cfg.d_model, r)
        shape.adapter_saved_bytes += bottleneck_saved_bytes(shape, r)
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        from harness.techniques._adapter_modules import Bottleneck

        adapter = Bottleneck(d_model_of(model), self.config.bottleneck, first_weight(model))
        add_after(model, "mlp", lambda: adapter, self.name)
        freeze_base(model, self.config.also_train)
        return model
