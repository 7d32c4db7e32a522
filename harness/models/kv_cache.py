"""The key/value cache of incremental decoding, for the built-in model, and its options.

One `CacheSpec` states what the generate workload's techniques chose (static or dynamic storage, a
sliding window, quantized storage); `KVCache` is the built-in model's cache built from it, and
`harness.workloads.generate_hf` builds transformers' caches from the same spec. Shapes: B batch,
H key/value heads, T cached tokens, hs head size.

Semantics shared by every variant (they match transformers' cache layers):
- the first update of a layer (the prefill) returns the prompt's own keys/values, full precision and
  full length, and stores them (quantized, or only the last `window` tokens, as the spec says);
- every later update stores the new token first and returns what the cache holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch


StorageKind = Literal["dynamic", "static"]


@dataclass(frozen=True)
class CacheSpec:
    """How the KV cache of a generation is stored; generate techniques edit it (`configure_cache`)."""

    # dynamic: grown by concatenation per token (transformers' DynamicCache); static: allocated once for
    # the whole generation (prompt_len + new_tokens) and written in place (StaticCache).
    storage: StorageKind = "dynamic"
    # Keep only the last `window` tokens' keys/values (None: keep all).
    window: int | None = None
    # Stored integer width (8 or 4) with one scale per `group_size` channels of each token and head
    # (None: the model's dtype).
    bits: int | None = None
    # Channels per quantization scale; None: the head size (one scale per token per head).
    group_size: int | None = None

    def with_(self, **changes: Any) -> CacheSpec:
        return replace(self, **changes)


# ---- integer quantization of K/V, per token and head (symmetric absmax, one scale per group) --------


def quantize(x: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, T, hs) -> (codes, scales). int8 codes in [-127, 127]; int4 codes in [-7, 7] packed two
    per byte (uint8). Scales (B, H, T, hs // group) in x's dtype: the same width a bf16 cache pays."""
    import torch

    b, h, t, hs = x.shape
    if hs % group or (bits == 4 and hs % 2):
        raise ValueError(
            f"KV quantization: group_size {group} must divide the head size {hs} (and int4 needs an even "
            "head size); choose a divisor"
        )
    xf = x.float().reshape(b, h, t, hs // group, group)
    qmax = 127 if bits == 8 else 7
    # Rounded to the stored dtype first, so codes are made with exactly the scale dequantize will use;
    # the floor keeps an all-zero group from dividing by zero.
    scale = (xf.abs().amax(dim=-1, keepdim=True) / qmax).to(x.dtype).clamp(min=torch.finfo(x.dtype).tiny)
    codes = torch.round(xf / scale.float()).clamp(-qmax, qmax).to(torch.int8).reshape(b, h, t, hs)
    if bits == 4:
        u = (codes + 8).to(torch.uint8)  # [1, 15]: one nibble each
        codes = (u[..., 0::2] | (u[..., 1::2] << 4)).contiguous()
    return codes, scale.squeeze(-1)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, bits: int, dtype: torch.dtype) -> torch.Tensor:
    import torch

    if bits == 4:
        lo = (codes & 0xF).to(torch.int8) - 8
        hi = (codes >> 4).to(torch.int8) - 8
        codes = torch.stack((lo, hi), dim=-1).flatten(-2)
    b, h, t, hs = codes.shape
    groups = scale.size(-1)
    x = codes.float().reshape(b, h, t, groups, hs // groups) * scale.float().unsqueeze(-1)
    return x.reshape(b, h, t, hs).to(dtype)


# ---- the built-in model's cache ----------------------------------------------------------------------


class _Layer:
    """One decoder layer's stored keys and values: plain (k, v) or quantized (k codes, k scales, v codes,
    v scales). The T axis is dim -2 of every stored tensor."""

    def __init__(self, spec: CacheSpec, capacity: int) -> None:
        self.spec = spec
        self.capacity = capacity  # static storage: tokens allocated; unused for dynamic
        self.parts: list[torch.Tensor] = []
        self.stored = 0  # tokens held (<= window)
        self.seen = 0  # tokens ever written (absolute position of the next one)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.seen == 0
        self._store(self._encode(k, v))
        self.seen += k.size(-2)
        if first:
            return k, v
        return self._decode(k.dtype)

    def _encode(self, k: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        bits = self.spec.bits
        if bits is None:
            return [k, v]
        group = self.spec.group_size or k.size(-1)
        return [*quantize(k, bits, group), *quantize(v, bits, group)]

    def _decode(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [p[..., : self.stored, :] for p in self.parts]
        bits = self.spec.bits
        if bits is None:
            return parts[0], parts[1]
        return dequantize(parts[0], parts[1], bits, dtype), dequantize(parts[2], parts[3], bits, dtype)

    def _store(self, new: list[torch.Tensor]) -> None:
        if self.spec.storage == "static":
            self._store_static(new)
        else:
            self._store_dynamic(new)

    def _store_dynamic(self, new: list[torch.Tensor]) -> None:
        import torch

        merged = new
        if self.parts:
            merged = [torch.cat([old, p], dim=-2) for old, p in zip(self.parts, new, strict=True)]
        w = self.spec.window
        if (w and merged[0].size(-2) > w) or not self.parts:
            # A contiguous copy of what is kept: the cache owns exactly its tokens' storage, not the
            # projection output a prompt's keys are a view of, nor the evicted tokens.
            merged = [m[..., -w:, :] if w else m for m in merged]
            merged = [m.clone(memory_format=torch.contiguous_format) for m in merged]
        self.parts = merged
        self.stored = self.parts[0].size(-2)

    def _store_static(self, new: list[torch.Tensor]) -> None:
        """Writes into buffers allocated once. With a window the buffer is a ring of `window` slots: a
        decode step attends to every slot, and each key already carries its position, so the order of
        slots does not matter."""
        w = self.spec.window
        cap = min(w, self.capacity) if w else self.capacity
        if not self.parts:
            self.parts = [p.new_zeros(*p.shape[:-2], cap, p.size(-1)) for p in new]
        t = new[0].size(-2)
        if not w and self.seen + t > cap:
            raise ValueError(f"static KV cache of {cap} tokens is full at position {self.seen + t}")
        for i in range(max(0, t - cap), t):
            slot = (self.seen + i) % cap
            for buf, p in zip(self.parts, new, strict=True):
                buf[..., slot, :] = p[..., i, :]
        self.stored = min(self.seen + t, cap)


class KVCache:
    """The built-in Transformer's cache: one `_Layer` per block and the position of the next token."""

    def __init__(self, spec: CacheSpec, n_layers: int, max_tokens: int) -> None:
        self.spec = spec
        self.layers = [_Layer(spec, max_tokens) for _ in range(n_layers)]

    @property
    def position(self) -> int:
        """Absolute position of the next token (tokens seen, not tokens kept)."""
        return self.layers[0].seen if self.layers else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layers[layer].update(k, v)


def storage_bytes(cache: Any) -> int:
    """Bytes of the real storage under the K/V tensors a cache holds (ours or transformers'), each storage
    counted once: a static cache counts its whole allocation, a quantized one its codes and scales.
    K/V data, codes and scales are (B, H, T, ...) tensors; rank < 3 ones are position counters."""
    seen: dict[int, int] = {}
    for layer in getattr(cache, "layers", []):
        for t in _tensors(vars(layer)):
            st = t.untyped_storage()
            # The storage object's own address, not its data pointer: a fake tensor (the estimate) has no
            # data, and torch warns that reading its pointer is a bug.
            key = st._cdata
            seen[key] = max(seen.get(key, 0), st.nbytes())
    return sum(seen.values())


def _tensors(obj: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj] if obj.numel() and obj.dim() >= 3 else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def analytic_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, batch: int, elt: float) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes per element."""
    return int(2 * layers * kv_heads * head_dim * tokens * batch * elt)


def bytes_per_element(spec: CacheSpec, head_dim: int, dtype_bytes: int) -> float:
    """Stored bytes per cached K or V element: the dtype's width, or bits/8 plus the scales' share
    (one scale of the model's dtype per `group_size` elements)."""
    if spec.bits is None:
        return float(dtype_bytes)
    group = spec.group_size or head_dim
    return spec.bits / 8 + dtype_bytes / group
