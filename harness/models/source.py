"""Model sources: the one small interface between a suite's `models:` entry and everything that builds,
transforms or predicts a model.

A case's `model` dict is one of three shapes (its `source` key says which; the built-in shape has none, so
the ids of built-in cases are those they had before sources existed):

    built-in   ModelConfig fields                         {size: ci, n_layers: 2}
    hf         {source: hf, family, preset, config, ...}  {hf: llama-3.2-1b, num_hidden_layers: 4}
                                                          {hf_config: path/config.json}
    factory    {source: factory, factory, kwargs, ...}    {factory: "mypkg.models:build", kwargs: {...}}

`config_of(case.model)` gives the typed config (ModelConfig, HfModelConfig or FactoryModelConfig), which
CONFIG-phase techniques rewrite through `replace` in harness's own vocabulary (tie_embeddings,
attention); `spec_of(cfg)` gives the numbers predictions need (layers, widths, heads, K/V heads, MLP
and norm kind), None for a factory module, whose shape harness cannot know. The built module's parts
(blocks, q/k/v/o projections, MLP linears, embeddings, head) are harness.models.layout's, found on the
module itself. Torch-free: `harness validate` resolves entries without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.models.config import ModelConfig
from harness.models.factory import FactoryModelConfig
from harness.models.hf import HfModelConfig

SourceKind = Literal["builtin", "hf", "factory"]
ModelSource = ModelConfig | HfModelConfig | FactoryModelConfig
# gelu_new: GPT-2's tanh GELU written as Python ops (transformers' NewGELUActivation), which keeps more
# tensors for backward than the fused F.gelu; the parameters are those of any two-matrix MLP.
Mlp = Literal["relu", "gelu", "gelu_new", "swiglu"]
Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["learned", "sinusoidal", "rotary"]


@dataclass(frozen=True)
class ModelSpec:
    """The numbers of a decoder-only Transformer that memory and FLOP formulas need."""

    family: str  # builtin, gpt2, llama, mistral, qwen2
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int  # == n_heads for multi-head attention; fewer for GQA, 1 for MQA
    head_dim: int
    d_ff: int
    vocab_size: int
    max_seq_len: int
    mlp: Mlp
    norm: Norm
    positions: Positions
    tied: bool
    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    # explicit: the (B, nh, T, T) probabilities are kept (transformers' eager); sdpa: the fused kernel.
    attention: str = "explicit"

    # The built-in ModelConfig's names, so formulas written for it read every source's spec.
    @property
    def activation(self) -> str:
        return self.mlp

    @property
    def bias(self) -> bool:
        return self.qkv_bias

    @property
    def tie_embeddings(self) -> bool:
        return self.tied

    @property
    def pos_encoding(self) -> str:
        return self.positions

    def replace(self, **changes: Any) -> ModelSpec:
        if "tie_embeddings" in changes:
            changes["tied"] = changes.pop("tie_embeddings")
        return dataclasses.replace(self, **changes)

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def block_params(self) -> int:
        """Parameters of one decoder block: attention (GQA-aware), MLP, two norms."""
        c, f = self.d_model, self.d_ff
        attn = c * self.q_dim + 2 * c * self.kv_dim + self.q_dim * c
        attn += (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + c * self.out_bias
        if self.mlp == "swiglu":  # gate, up (C -> F) and down (F -> C)
            mlp = 3 * c * f + (2 * f + c) * self.mlp_bias
        else:
            mlp = 2 * c * f + (f + c) * self.mlp_bias
        return attn + mlp + 2 * self.norm_params()

    def norm_params(self) -> int:
        return 2 * self.d_model if self.norm == "layernorm" else self.d_model  # RMSNorm: weight only

    def embedding_params(self) -> int:
        pos = self.max_seq_len * self.d_model if self.positions == "learned" else 0
        return self.vocab_size * self.d_model + pos

    def param_count(self) -> int:
        """Exact parameter count of the built model (a tied head counted once)."""
        head = 0 if self.tied else self.vocab_size * self.d_model
        return self.embedding_params() + self.n_layers * self.block_params() + self.norm_params() + head


def source_kind(model: dict[str, Any]) -> SourceKind:
    kind = model.get("source", "builtin")
    return "hf" if kind == "hf" else "factory" if kind == "factory" else "builtin"


def family_of(model: dict[str, Any]) -> str:
    """builtin, factory, or the transformers family (gpt2, llama, mistral, qwen2)."""
    kind = source_kind(model)
    return str(model["family"]) if kind == "hf" else kind


def kv_heads_of(model: dict[str, Any]) -> int | None:
    """The model's key/value heads per layer, from its spec (None for a factory module: known only once
    built). Techniques check against it before a process is spent."""
    spec = spec_of(config_of(model))
    return spec.n_kv_heads if spec is not None else None


def config_of(model: dict[str, Any]) -> ModelSource:
    """The typed config of a case's `model` dict."""
    kind = source_kind(model)
    if kind == "hf":
        return HfModelConfig.from_dict(model)
    if kind == "factory":
        return FactoryModelConfig.from_dict(model)
    return ModelConfig(**model)


def spec_of(cfg: ModelSource) -> ModelSpec | None:
    """The config's numbers, or None for a factory module (its shape is its own)."""
    if isinstance(cfg, ModelConfig):
        return _builtin_spec(cfg)
    if isinstance(cfg, HfModelConfig):
        return _hf_spec(cfg)
    return None


def _builtin_spec(cfg: ModelConfig) -> ModelSpec:
    kv = getattr(cfg, "n_kv_heads", None) or cfg.n_heads  # GQA on the built-in model, where the config has it
    return ModelSpec(
        family="builtin",
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_kv_heads=kv,
        head_dim=cfg.head_dim,
        d_ff=cfg.d_ff,
        vocab_size=cfg.vocab_size,
        max_seq_len=cfg.max_seq_len,
        mlp=cfg.activation,
        norm="layernorm",
        positions=cfg.pos_encoding,
        tied=cfg.tie_embeddings,
        qkv_bias=cfg.bias,
        out_bias=cfg.bias,
        mlp_bias=cfg.bias,
        attention=cfg.attention,
    )


def _hf_spec(cfg: HfModelConfig) -> ModelSpec:
    m = cfg.merged()
    if cfg.family == "gpt2":
        d, heads = int(m["n_embd"]), int(m["n_head"])
        return ModelSpec(
            family="gpt2",
            n_layers=int(m["n_layer"]),
            d_model=d,
            n_heads=heads,
            n_kv_heads=heads,
            head_dim=d // heads,
            d_ff=int(m["n_inner"] or 4 * d),
            vocab_size=int(m["vocab_size"]),
            max_seq_len=int(m["n_positions"]),
            mlp="gelu_new" if m["activation_function"] == "gelu_new" else "gelu",
            norm="layernorm",
            positions="learned",
            tied=bool(m["tie_word_embeddings"]),
            qkv_bias=True,
            out_bias=True,
            mlp_bias=True,
            attention="explicit" if cfg.attention == "eager" else "sdpa",
        )
    d, heads = int(m["hidden_size"]), int(m["num_attention_heads"])
    qwen = cfg.family == "qwen2"  # Qwen2 always has q/k/v biases (and none on o_proj)
    return ModelSpec(
        family=cfg.family,
        n_layers=int(m["num_hidden_layers"]),
        d_model=d,
        n_heads=heads,
        n_kv_heads=int(m.get("num_key_value_heads") or heads),
        head_dim=int(m.get("head_dim") or d // heads),
        d_ff=int(m["intermediate_size"]),
        vocab_size=int(m["vocab_size"]),
        max_seq_len=int(m["max_position_embeddings"]),
        mlp="swiglu",
        norm="rmsnorm",
        positions="rotary",
        tied=bool(m["tie_word_embeddings"]),
        qkv_bias=qwen or bool(m.get("attention_bias", False)),
        out_bias=bool(m.get("attention_bias", False)),
        mlp_bias=bool(m.get("mlp_bias", False)),
        attention="explicit" if cfg.attention == "eager" else "sdpa",
    )


class UnsupportedModel(Exception):
    """A technique met a model that lacks the part it acts on (a factory module without decoder blocks);
    known only once the module is built, so raised in the case process, which records `unsupported`."""


# ---- suite entries ---------------------------------------------------------------------------------

SOURCE_KEYS = ("size", "hf", "hf_config", "factory")


class EntryError(ValueError):
    """A bad `models.<name>` entry: `key` under it and the one-line problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key, self.problem = key, problem


def resolve_entry(entry: dict[str, Any], suite_dir: Path) -> dict[str, Any] | None:
    """A non-built-in entry resolved to its case `model` dict; None for a built-in (`size:`) entry, which
    load.py resolves as before. EntryError names the bad key."""
    present = [k for k in SOURCE_KEYS if k in entry]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise EntryError("", f"name exactly one of {', '.join(SOURCE_KEYS)} (found: {found})")
    if present[0] == "size":
        return None
    if present[0] == "factory":
        from harness.models import factory

        try:
            return factory.resolve(entry, [suite_dir, Path.cwd()]).to_dict()
        except factory.FactoryEntryError as e:
            raise EntryError(e.key, e.problem) from None
    return _resolve_hf(entry, suite_dir)


def _resolve_hf(entry: dict[str, Any], suite_dir: Path) -> dict[str, Any]:
    from harness.models import hf

    if not hf.transformers_available():
        raise EntryError("hf" if "hf" in entry else "hf_config", f"{hf.INSTALL_HINT}, or use `size:`")
    overrides = {k: v for k, v in entry.items() if k not in ("hf", "hf_config", "attention")}
    try:
        if "hf" in entry:
            if not isinstance(entry["hf"], str):
                raise EntryError("hf", f"a preset name (got {entry['hf']!r})")
            cfg = hf.resolve_preset(entry["hf"], overrides)
        else:
            path = Path(str(entry["hf_config"]))
            cfg = hf.resolve_file(path if path.is_absolute() else suite_dir / path, overrides)
    except hf.HfEntryError as e:
        raise EntryError(e.key, e.problem) from None
    attention = entry.get("attention", "eager")
    if attention not in ("eager", "sdpa"):
        raise EntryError("attention", f"{attention!r} is not allowed; expected 'eager' or 'sdpa'")
    return dataclasses.replace(cfg, attention=attention).to_dict()
