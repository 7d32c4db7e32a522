from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn

    from harness.analysis.shape import Shape


class GroupedQueryAttention(Technique):
    """Grouped-query attention (Ainslie et al. 2023): query heads share key/value heads in groups;
    kv_heads 1 is multi-query attention (Shazeer 2019). The seed's parameter sharing, applied to K/V.

    Each group's K and V projection rows are the mean of its heads' rows (the paper's mean-pooled
    "uptraining" start), so no new weights are invented; on a transformers model the attention's
    num_key_value_groups and the config's num_key_value_heads follow, as if built with that config.
    Saves: the KV cache (and K/V activations) by n_heads / kv_heads: exactly, it is
    2 x layers x kv_heads x head_dim x tokens x batch x bytes; the K and V projections' parameters by
    the same factor.
    Costs: quality until fine-tuned (the pooled heads are an approximation of the originals); the
    attention itself still runs over n_heads query heads.
    """

    name: ClassVar[str] = "grouped_query_attention"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    conflicts: ClassVar[dict[str, str]] = {
        "structured_pruning": "structured_pruning removes query heads with their own K/V rows; "
        "under grouped K/V heads that would cut heads other queries still use",
    }

    class Config(TechniqueConfig):
        kv_heads: int = Field(default=1, ge=1)
        """Key/value heads per layer after pooling (1: multi-query); must divide the model's K/V heads."""

    config: Config

    def adjust_prediction(self, shape: Shape) -> str | None:
        kv = self.config.kv_heads
        heads = getattr(shape.cfg, "n_kv_heads", None) or shape.cfg.n_heads
        if heads % kv:
            return f"kv_heads {kv} does not divide the model's {heads} K/V heads"
        shape.kv_heads = kv
        return None

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.model_family == "gpt2":  # known before the case runs: no process spent on it
            return "GPT-2 keeps q, k, v in one fused c_attn projection; K/V heads pool in separate k/v_proj"
        heads, kv = ctx.model_kv_heads, self.config.kv_heads
        if heads is not None and heads % kv:
            return f"kv_heads {kv} does not divide the model's {heads} K/V heads; choose a divisor of {heads}"
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch

        from harness.models.source import UnsupportedModel

        attns = [
            m
            for m in model.modules()
            if hasattr(m, "k_proj") and hasattr(m, "v_proj") and hasattr(m, "head_dim")
        ]
        if not attns:  # a factory module: known once built, recorded as `unsupported`
            raise UnsupportedModel(
                "grouped_query_attention needs attention modules with separate k_proj and v_proj "
                f"(harness's model, Llama/Mistral/Qwen2); {type(model).__name__} has none (GPT-2 fuses them)"
            )
        self._unchanged = all(_kv_heads(m) == self.config.kv_heads for m in attns)  # said in metrics
        with torch.no_grad():
            for module in attns:
                _pool(module, self.config.kv_heads)
        return model

    def metrics(self, model: nn.Module) -> dict[str, Any]:
        heads = {_kv_heads(m) for m in model.modules() if hasattr(m, "k_proj") and hasattr(m, "head_dim")}
        out: dict[str, Any] = {"kv_heads_count": min(heads)} if heads else {}
        if getattr(self, "_unchanged", False):  # ok and ratio 1.00 would otherwise read as "no saving"
            kv = self.config.kv_heads
            out["technique_note"] = (
                f"grouped_query_attention: the model has {kv} K/V heads already; nothing pooled"
            )
        return out


def _kv_heads(attn: nn.Module) -> int:
    return int(attn.get_submodule("k_proj").weight.shape[0]) // int(attn.head_dim)


def _pool(attn: nn.Module, kv_heads: int) -> None:
    """Mean-pool the K and V projections' heads into `kv_heads` groups of consecutive heads (K/V head g
    serves query heads g*G .. g*G + G - 1, the order repeat_interleave and transformers' repeat_kv use)."""
    current = _kv_heads(attn)
    if current == kv_heads:
        return
    if current % kv_heads:
        raise ValueError(
            f"grouped_query_attention: kv_heads {kv_heads} does not divide the model's {current} K/V heads; "
            f"choose a divisor of {current}"
        )
    for name in ("k_proj", "v_proj"):
        setattr(attn, name, _pooled_linear(attn.get_submodule(name), current, kv_heads))
    if hasattr(attn, "kv_groups"):  # harness's CausalSelfAttention
        attn.kv_groups = int(attn.n_heads) // kv_heads
    if hasattr(attn, "num_key_value_groups"):  # transformers' attention modules
        heads = int(attn.config.num_attention_heads)
        attn.num_key_value_groups = heads // kv_heads
        attn.config.num_key_value_heads = kv_heads  # shared: caches follow


def _pooled_linear(linear: nn.Module, heads: int, groups: int) -> nn.Module:
    from torch import nn

    assert isinstance(linear, nn.Linear)
    w = linear.weight  # (heads * hs, d)
    hs = w.shape[0] // heads
    new = nn.Linear(w.shape[1], groups * hs, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.copy_(w.view(groups, heads // groups, hs, -1).mean(1).reshape(groups * hs, -1))
    if linear.bias is not None:
        new.bias.copy_(linear.bias.view(groups, heads // groups, hs).mean(1).reshape(-1))
    new.weight.requires_grad_(w.requires_grad)
    return new
