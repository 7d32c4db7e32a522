"""`hf:` and `hf_config:` model sources: transformers' own model classes, built from their config classes
in code, offline (no Hub, no weights downloaded).

This file is torch-free: it resolves and checks a suite's model entry (unknown preset, unknown field,
wrong value type) from plain data, so `harness validate` names the problem without importing
transformers. Building the module is harness.models.hf_build's job, in the case process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.models.hf_fields import ALIASES, FIELDS

HfAttention = Literal["eager", "sdpa"]

# transformers' class names per family (config, causal-LM model).
CLASSES: dict[str, tuple[str, str]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
}

INSTALL_HINT = "hf models need transformers: pip install 'harness[hf]'"

# Dropout 0 everywhere, as in the built-in model: techniques meant to be exact (checkpointing,
# accumulation) must compare bit-for-bit with the baseline, which dropout's RNG would prevent.
_GPT2_NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "summary_first_dropout": 0.0}

# The published config.json of each model (only the fields that differ from nothing; numbers checked
# against the published parameter counts in tests/test_model_sources.py).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": (
        "gpt2",
        {
            "vocab_size": 50257,
            "n_positions": 1024,
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": True,
            **_GPT2_NO_DROPOUT,
        },
    ),
    "llama-3.2-1b": (
        "llama",
        {
            "vocab_size": 128256,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            "tie_word_embeddings": True,
            "bos_token_id": 128000,
            "eos_token_id": 128001,
        },
    ),
    "llama-3.1-8b": (
        "llama",
        {
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            "tie_word_embeddings": False,
            "bos_token_id": 128000,
            "eos_token_id": 128001,
        },
    ),
    "mistral-7b": (
        "mistral",
        {
            "vocab_size": 32000,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "sliding_window": 4096,
            "tie_word_embeddings": False,
        },
    ),
    "qwen2.5-0.5b": (
        "qwen2",
        {
            "vocab_size": 151936,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "use_sliding_window": False,
            "sliding_window": 32768,
            "max_window_layers": 24,
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
        },
    ),
    "qwen2.5-7b": (
        "qwen2",
        {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "use_sliding_window": False,
            "sliding_window": 131072,
            "max_window_layers": 28,
            "tie_word_embeddings": False,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
        },
    ),
}

# Keys of a real config.json that are bookkeeping, not architecture: accepted in hf_config files and dropped.
_IGNORED_FILE_KEYS = frozenset({"model_type", "torch_dtype", "_name_or_path", "transformers_version"})


class HfEntryError(ValueError):
    """A bad `hf:` / `hf_config:` entry: `key` is the offending key under the model, `problem` the line."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key, self.problem = key, problem


@dataclass(frozen=True)
class HfModelConfig:
    """A transformers causal LM: its family, the config fields set explicitly (preset + overrides), and
    the attention implementation (eager: the explicit (B, nh, T, T) path, like the built-in baseline)."""

    family: str
    config: dict[str, Any]
    preset: str | None = None
    attention: HfAttention = "eager"
    source: Literal["hf"] = field(default="hf")

    def merged(self) -> dict[str, Any]:
        """Every field: the class's declared defaults under the explicit ones (aliases resolved)."""
        out = dict(FIELDS[self.family])
        for key, value in self.config.items():
            out[ALIASES[self.family].get(key, key) if key not in out else key] = value
        return out

    @property
    def vocab_size(self) -> int:
        return int(self.merged()["vocab_size"])

    @property
    def max_seq_len(self) -> int:
        m = self.merged()
        return int(m["n_positions"] if self.family == "gpt2" else m["max_position_embeddings"])

    def replace(self, **changes: Any) -> HfModelConfig:
        """Harness's config vocabulary mapped onto transformers' (so CONFIG-phase techniques act on either
        source): tie_embeddings -> tie_word_embeddings, attention explicit/sdpa -> eager/sdpa; any
        transformers field of the family by its own name."""
        config, attention = dict(self.config), self.attention
        for key, value in changes.items():
            if key == "tie_embeddings":
                config["tie_word_embeddings"] = value
            elif key == "attention":
                attention = "sdpa" if value == "sdpa" else "eager"
            elif key in FIELDS[self.family] or key in ALIASES[self.family]:
                config[key] = value
            else:
                raise ValueError(f"{self.family} configs have no field {key!r}")
        return dataclasses.replace(self, config=config, attention=attention)

    def to_dict(self) -> dict[str, Any]:
        """The case's `model` entry: what determines the model."""
        return {
            "source": "hf",
            "family": self.family,
            "preset": self.preset,
            "attention": self.attention,
            "config": self.config,
            # Derived, copied for the suite's checks (sequence length, byte corpus) that read any source.
            "max_seq_len": self.max_seq_len,
            "vocab_size": self.vocab_size,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> HfModelConfig:
        return HfModelConfig(
            family=d["family"], config=dict(d["config"]), preset=d.get("preset"), attention=d["attention"]
        )


def transformers_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


def resolve_preset(preset: str, overrides: dict[str, Any]) -> HfModelConfig:
    """`{hf: preset, field: value, ...}` -> the config; HfEntryError names the bad key."""
    if preset not in PRESETS:
        from harness.errors import allowed, closest

        raise HfEntryError(
            "hf", f"unknown preset {preset!r}; allowed: {allowed(PRESETS)}{closest(preset, PRESETS)}"
        )
    family, base = PRESETS[preset]
    _check_fields(family, overrides)
    cfg = HfModelConfig(family=family, config={**base, **overrides}, preset=preset)
    _check_shape(cfg)
    return cfg


def resolve_file(path: Path, overrides: dict[str, Any]) -> HfModelConfig:
    """`{hf_config: path/config.json, field: value, ...}` -> the config; only the file's content (not its
    path) enters the case, so a moved file keeps its case ids."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise HfEntryError("hf_config", f"cannot read {path} ({e.strerror}); check the path") from None
    except json.JSONDecodeError as e:
        raise HfEntryError("hf_config", f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise HfEntryError("hf_config", f"{path} must hold a JSON object (a transformers config.json)")
    family = raw.get("model_type")
    if family not in FIELDS:
        from harness.errors import allowed, closest

        hint = closest(str(family), FIELDS) if isinstance(family, str) else ""
        raise HfEntryError(
            "hf_config",
            f"{path}: model_type {family!r} is not a family harness builds; allowed: {allowed(FIELDS)}{hint}",
        )
    config = {k: v for k, v in raw.items() if k not in _IGNORED_FILE_KEYS}
    _check_fields(family, config, where=f"{path}: ")
    _check_fields(family, overrides)
    cfg = HfModelConfig(family=family, config={**config, **overrides})
    _check_shape(cfg, where=f"{path}: " if not overrides else "")
    return cfg


def _check_fields(family: str, values: dict[str, Any], where: str = "") -> None:
    from harness.errors import allowed, closest

    known = {**FIELDS[family], **dict.fromkeys(ALIASES[family])}
    for key, value in values.items():
        if key not in known:
            raise HfEntryError(
                key,
                f"{where}unknown {family} config field; allowed: {allowed(known)}{closest(key, known)}",
            )
        default = FIELDS[family].get(ALIASES[family].get(key, key))
        if not _same_kind(default, value):
            raise HfEntryError(key, f"{where}expected {type(default).__name__} (got {value!r})")


# Per family: (layers, width, heads, kv heads, head_dim, feed-forward) field names; None where it has none.
_SHAPE_KEYS = {
    "gpt2": ("n_layer", "n_embd", "n_head", None, None, "n_inner"),
    **dict.fromkeys(
        ("llama", "mistral", "qwen2"),
        ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
         "intermediate_size"),
    ),
}  # fmt: skip


def _check_shape(cfg: HfModelConfig, where: str = "") -> None:
    """What transformers would refuse only when the model is built (a traceback cut to its first line by
    then), said when the suite is read: positive sizes, heads that divide the width (Mistral and Qwen2
    need not with head_dim given) and K/V heads that divide the heads."""
    if cfg.family not in _SHAPE_KEYS:
        return
    m = cfg.merged()
    layers, width, heads, kv, head_dim, ffn = _SHAPE_KEYS[cfg.family]
    for key in (layers, width, heads, kv, head_dim, ffn, "vocab_size"):
        value = m.get(key) if key else None
        if value is not None and (not isinstance(value, int) or value < 1):
            raise HfEntryError(str(key), f"{where}must be a positive whole number (got {value!r})")
    # Llama's config checks the split even with head_dim given, GPT-2's attention when it is built.
    free_head_dim = (
        cfg.family in ("mistral", "qwen2") and head_dim is not None and m.get(head_dim) is not None
    )
    if not free_head_dim and m[width] % m[heads]:
        why = f"{width} {m[width]} is not a multiple of {heads} {m[heads]}; choose heads that divide it"
        raise HfEntryError(heads, where + why)
    if kv is not None and m.get(kv) is not None and m[heads] % m[kv]:
        raise HfEntryError(kv, f"{where}{kv} {m[kv]} does not divide {heads} {m[heads]}; choose a divisor")


def _same_kind(default: Any, value: Any) -> bool:
    """A value may replace a default of the same JSON kind (int for float too); a None default or a None
    value accepts anything here (transformers' own strict check runs when the model is built)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))
