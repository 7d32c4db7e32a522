from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from harness.analysis.shape import linear_dims
from harness.techniques._adapters import Extra, freeze_base
from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn

    from harness.analysis.shape import Shape

Target = Literal[
    "q_proj", "k_proj", "v_proj", "out_proj", "o_proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj"
]
DEFAULT_TARGETS: tuple[Target, ...] = ("q_proj", "v_proj")  # Hu et al.'s choice for GPT-3

# Target names -> roles of harness.models.layout, so one name means the same layer on every source:
# out_proj and o_proj are the attention output; fc1 is the MLP's input side (up, and gate for SwiGLU),
# fc2 its output. GPT-2's fused c_attn plays q, k and v at once (adapted once).
TARGET_ROLES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q",),
    "k_proj": ("k",),
    "v_proj": ("v",),
    "out_proj": ("o",),
    "o_proj": ("o",),
    "fc1": ("mlp_up", "mlp_gate"),
    "up_proj": ("mlp_up",),
    "gate_proj": ("mlp_gate",),
    "fc2": ("mlp_down",),
    "down_proj": ("mlp_down",),
}


class LoRA(Technique):
    """Low-rank adaptation (Hu et al. 2021): W = W0 + (alpha/r) B A on the chosen Linear layers, with
    W0 and everything else frozen; B starts at zero, so the first loss is exactly the baseline's.

    Saves: gradients and AdamW state of the base (only r * (d_in + d_out) per adapted matrix train),
    and the inputs frozen Linear layers would keep for weight gradients.
    Costs: two small matmuls per adapted layer (time), their (B, T, r) activations and the dropout mask
    if dropout > 0; activations of the base are otherwise unchanged.

    `impl: manual` (default) is written here in ~20 lines. `impl: peft` injects peft's LoRA layers
    (`inject_adapter_in_model`) as a cross-check; importing peft pulls in transformers (about 7 s and
    +170 MiB RSS here), which would land in the case's build phase, so it is not the default.
    With cross_layer_sharing, a shared block's Linear layers get one LoRA pair, shared like the block.
    """

    name: ClassVar[str] = "lora"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    freezes_base: ClassVar[bool] = True
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train", "infer"})

    class Config(TechniqueConfig):
        rank: int = Field(default=8, ge=1)
        """r: the rank of the update B A."""
        alpha: int = Field(default=16, ge=1)
        """The update is scaled by alpha / rank."""
        targets: list[Target] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
        """Linear layers (by role, in every block, on every model source) that get a LoRA update; Hu et al.
        chose q, v. out_proj = o_proj, fc1 = up (+ gate), fc2 = down_proj."""
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        """Dropout on the LoRA branch's input."""
        also_train: list[Extra] = Field(default_factory=list)
        """Base parts that train too: lm_head, embeddings, layer_norms. Frozen by default."""
        impl: Literal["manual", "peft"] = "manual"
        """manual: the LoRALinear here; peft: peft's inject_adapter_in_model (needs peft installed)."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        if reason := shape.freeze_base(list(self.config.also_train)):
            return reason
        if self.config.impl != "manual" or self.config.dropout > 0:
            return "only the manual implementation without dropout is modelled"
        c, r = shape.cfg, self.config.rank
        # The built-in block's names for the roles (a transformers family is not modelled: freeze_base).
        builtin = {"o_proj": "out_proj", "gate_proj": "fc1", "up_proj": "fc1", "down_proj": "fc2"}
        targets = [builtin.get(t, t) for t in self.config.targets]
        levels = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "out_proj": 1, "fc1": 2, "fc2": 2}
        shape.first_trainable = min([shape.first_trainable, *(levels[t] for t in targets)])
        for name in targets:
            d_in, d_out = linear_dims(c, name)
            shape.adapter_shapes += [(r, d_in), (d_out, r)] * shape.unique_blocks
        # Each adapted Linear's input is kept for A's gradient (q/k/v share one, ln1's output), and the
        # (b, s, r) A output for B's gradient; fc2's input is the MLP activation, already kept.
        n, ec = shape.tokens * c.d_model, shape.compute_bytes
        inputs = {"ln1" if t in ("q_proj", "k_proj", "v_proj") else t for t in targets}
        kept = {"ln1": n, "out_proj": n, "fc1": n, "fc2": 0}
        if c.activation == "gelu":
            kept["fc2"] = shape.tokens * c.d_ff  # GELU keeps its input; fc2 needs the output
        shape.adapter_saved_bytes += ec * (sum(kept[i] for i in inputs) + len(targets) * shape.tokens * r)
        return None

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if self.config.impl == "peft" and not env.has_module("peft"):
            return "lora impl 'peft' needs the peft package (pip install peft); impl 'manual' needs nothing"
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        if self.config.impl == "peft":
            model = self._inject_peft(model)
        else:
            self._inject_manual(model)
        freeze_base(model, self.config.also_train)
        return model

    def _inject_manual(self, model: nn.Module) -> None:
        from harness.techniques._adapter_modules import LoRALinear

        c = self.config
        for name in target_names(model, c.targets):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, attr, LoRALinear(getattr(parent, attr), c.rank, c.alpha, c.dropout))

    def _inject_peft(self, model: nn.Module) -> Any:
        from peft import LoraConfig, inject_adapter_in_model

        c = self.config
        names = target_names(model, c.targets)  # exact module names: peft matches them whole
        config = LoraConfig(
            r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=names, bias="none"
        )
        return inject_adapter_in_model(config, model)


def target_names(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Qualified names of the Linear layers playing the targets' roles in every block, each once: a
    module shared across layers (cross_layer_sharing) or across roles (GPT-2's c_attn) is listed at its
    first name, so it is adapted once. A model without decoder blocks (a factory module) is searched by
    attribute name over all its Linear layers."""
    from torch import nn

    from harness.models.layout import layout_of
    from harness.models.source import UnsupportedModel

    roles = [r for t in targets for r in TARGET_ROLES[t]]
    layout = layout_of(model)
    wanted: set[int] = set()
    if layout.blocks is not None:
        for block in layout.blocks:
            wanted.update(
                id(block.get_submodule(p)) for role in roles for p in layout.role_paths(block, role)
            )
    else:
        wanted = {
            id(m)
            for n, m in model.named_modules()
            if n.rsplit(".", 1)[-1] in targets and isinstance(m, nn.Linear)
        }
    if not wanted:
        raise UnsupportedModel(f"lora found no Linear layer for {targets} in {type(model).__name__}")
    # In module order (named_modules lists a shared module once): the adapters' random init follows it.
    return [name for name, m in model.named_modules() if id(m) in wanted]
