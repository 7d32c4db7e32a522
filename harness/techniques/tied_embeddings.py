from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.models.source import ModelSource
from harness.techniques.base import Context, Environment, Phase, Technique

if TYPE_CHECKING:
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
        return cfg.replace(tie_embeddings=True)

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.cfg = shape.cfg.replace(tie_embeddings=True)
        return None
