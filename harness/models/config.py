"""Model configurations as plain data, looked up by name (litgpt's habit).

A suite names a size and may override any field; the resolved config is part of a case's identity.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

PosEncoding = Literal["learned", "sinusoidal"]
Activation = Literal["relu", "gelu"]
AttentionImpl = Literal["explicit", "sdpa"]


class ConfigValueError(ValueError):
    """A ModelConfig field outside its range; `field` names it so a suite error can point at the key."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def range_problems(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) for every value a model cannot be built with (a type error is the schema's job)."""
    out = []
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            out.append((name, f"must be an integer >= 1 (got {value!r})"))
    dropout = fields.get("dropout")
    if isinstance(dropout, (int, float)) and not 0.0 <= dropout < 1.0:
        out.append(("dropout", f"must be in [0, 1) (got {dropout!r})"))
    eps = fields.get("layer_norm_eps")
    if isinstance(eps, (int, float)) and not (math.isfinite(eps) and eps > 0):
        out.append(("layer_norm_eps", f"must be a finite number > 0 (got {eps!r})"))
    d, h = fields.get("d_model"), fields.get("n_heads")
    if isinstance(d, int) and isinstance(h, int) and d >= 1 and h >= 1 and d % h:
        out.append(("n_heads", f"d_model {d} is not divisible by n_heads {h}"))
    return out


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only Transformer: embeddings, pre-LN blocks, LM head."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_seq_len: int
    pos_encoding: PosEncoding = "learned"
    # ReLU is the seed's FFN, max(0, xW1 + b1)W2 + b2; GELU is what GPT-2-class models use.
    activation: Activation = "relu"
    # "explicit" materialises softmax(QK^T / sqrt(d_k)) as a (B, nh, T, T) tensor; "sdpa" calls the fused
    # kernel, which on CPU and CUDA keeps memory linear in T. Baseline cases use the explicit path.
    attention: AttentionImpl = "explicit"
    tie_embeddings: bool = False
    bias: bool = True
    # Dropout is 0 so that techniques meant to be exact (checkpointing, accumulation) are comparable
    # bit-for-bit with the baseline; recomputation with dropout needs RNG-state replay.
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        problems = range_problems(dataclasses.asdict(self))
        if problems:
            raise ConfigValueError(*problems[0])

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Sizes a user names in a suite. Parameter counts (untied head, learned positions, ReLU/GELU alike):
#   ci          ~0.9 M   unit tests and CI
#   small       ~10 M    quick CPU comparisons
#   reference   27,566,080  the model docs/techniques.md's CPU table measured
#   gpt2-small  ~163 M untied / 124 M tied (GPT-2 small shapes)
#   gpt2-medium ~406 M untied / 355 M tied
#   1b          ~1.3 B   GPU users
SIZES: dict[str, ModelConfig] = {
    "ci": ModelConfig(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_seq_len=512),
    "small": ModelConfig(vocab_size=4096, d_model=256, n_layers=6, n_heads=8, d_ff=1024, max_seq_len=1024),
    "reference": ModelConfig(
        vocab_size=8192, d_model=512, n_layers=6, n_heads=8, d_ff=2048, max_seq_len=512, activation="gelu"
    ),
    "gpt2-small": ModelConfig(
        vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_seq_len=1024, activation="gelu"
    ),
    "gpt2-medium": ModelConfig(
        vocab_size=50257,
        d_model=1024,
        n_layers=24,
        n_heads=16,
        d_ff=4096,
        max_seq_len=1024,
        activation="gelu",
    ),
    "1b": ModelConfig(
        vocab_size=50257,
        d_model=2048,
        n_layers=24,
        n_heads=16,
        d_ff=8192,
        max_seq_len=2048,
        activation="gelu",
    ),
}

CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelConfig))


def resolve(size: str, overrides: dict[str, Any]) -> ModelConfig:
    """The named size with the suite's overrides applied (both already validated by the schema)."""
    return SIZES[size].replace(**overrides)


def count_params(cfg: ModelConfig) -> int:
    """Exact parameter count of `harness.models.transformer.Transformer` built from `cfg`."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    b = 1 if cfg.bias else 0
    attn = 4 * d * d + 4 * d * b  # q, k, v, out projections
    mlp = 2 * d * f + (f + d) * b
    norms = 2 * 2 * d  # two LayerNorms, weight + bias
    block = attn + mlp + norms
    embed = v * d + (cfg.max_seq_len * d if cfg.pos_encoding == "learned" else 0)
    head = 0 if cfg.tie_embeddings else v * d
    return embed + cfg.n_layers * block + 2 * d + head  # + final LayerNorm
