from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import nn

from harness.techniques._adapters import Extra, LoRALinear, freeze_base
from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

Target = Literal["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
DEFAULT_TARGETS: tuple[Target, ...] = ("q_proj", "v_proj")  # Hu et al.'s choice for GPT-3


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
    order: ClassVar[int] = 10  # after pruning (0-9), before adapters (11, 12) and quantization (20-29)
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train", "infer"})

    class Config(TechniqueConfig):
        rank: int = Field(default=8, ge=1)
        """r: the rank of the update B A."""
        alpha: int = Field(default=16, ge=1)
        """The update is scaled by alpha / rank."""
        targets: list[Target] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
        """Linear layers (by attribute name in every block) that get a LoRA update; Hu et al. chose q, v."""
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        """Dropout on the LoRA branch's input."""
        also_train: list[Extra] = Field(default_factory=list)
        """Base parts that train too: lm_head, embeddings, layer_norms. Frozen by default."""
        impl: Literal["manual", "peft"] = "manual"
        """manual: the LoRALinear here; peft: peft's inject_adapter_in_model (needs peft installed)."""

    config: Config

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
        # named_modules() lists a shared module once, so a block shared across layers is adapted once.
        found = [
            (name, module)
            for name, module in model.named_modules()
            if name.rsplit(".", 1)[-1] in self.config.targets and isinstance(module, nn.Linear)
        ]
        if not found:
            raise ValueError(f"lora found no Linear layer named {self.config.targets}")
        c = self.config
        for name, module in found:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, LoRALinear(module, c.rank, c.alpha, c.dropout))

    def _inject_peft(self, model: nn.Module) -> Any:
        from peft import LoraConfig, inject_adapter_in_model

        c = self.config
        config = LoraConfig(
            r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=list(c.targets), bias="none"
        )
        return inject_adapter_in_model(config, model)
