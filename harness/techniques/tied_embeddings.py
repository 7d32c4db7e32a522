from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.models.source import ModelSource
from harness.techniques.base import Context, Environment, Phase, Technique

if TYPE_CHECKING:
    from torch import nn

    from harness.analysis.shape import Shape


class TiedEmbeddings(Technique):
    """Tie the LM head's weight to the token embedding (Press & Wolf 2017; GPT-2 does this).

    Saves: vocab_size x d_model parameters, and with them their gradient and optimizer state (16 bytes
    each under fp32 AdamW): 4.19 M parameters (64 MiB of training state) at the reference size.
    Costs: nothing in time; the model is a different model (one matrix serves input and output), so
    losses differ from the untied baseline. Activations (the b*s*V logits) are unchanged.
    """

    name: ClassVar[str] = "tied_embeddings"
    phase: ClassVar[Phase] = Phase.CONFIG

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.model_source == "factory":
            return "a factory module's embeddings and head are its own: tie them in your module"
        return None

    def configure_model(self, cfg: ModelSource, ctx: Context) -> ModelSource:
        self._already_tied = _tied(cfg)  # said in metrics: ok at ratio 1.00 would read as "no saving"
        return cfg.replace(tie_embeddings=True)

    def metrics(self, model: nn.Module) -> dict[str, Any]:
        if getattr(self, "_already_tied", False):
            return {"technique_note": "tied_embeddings: the model's embeddings and head were tied already"}
        return {}

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.cfg = shape.cfg.replace(tie_embeddings=True)
        return None


def _tied(cfg: ModelSource) -> bool:
    """Whether the config ties the head to the embedding already (harness's or transformers' field)."""
    from harness.models.hf import HfModelConfig

    if isinstance(cfg, HfModelConfig):
        return bool(cfg.merged().get("tie_word_embeddings"))
    return bool(getattr(cfg, "tie_embeddings", False))
