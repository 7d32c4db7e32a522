"""Helpers shared by the pruning and quantization techniques: which Linear layers they act on, and
what their weights really occupy (a plain `numel * element_size` is wrong for masks, sparse and
quantized storage)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


# The weight of a tied LM head is the token embedding: pruning or quantizing it as a Linear would
# change the embedding too, so such layers are never targets.
LM_HEAD = "lm_head"


def target_linears(model: nn.Module, include_lm_head: bool) -> list[tuple[str, nn.Module]]:
    """The model's nn.Linear layers (by qualified name) that a weight technique acts on."""
    from torch import nn

    tied = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    out: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or is_quantized_linear(module):
            continue
        if name.rsplit(".", 1)[-1] == LM_HEAD and not include_lm_head:
            continue
        weights = (_own(module, "weight_orig"), _own(module, "weight"))
        if any(w is not None and id(w) in tied for w in weights):
            continue
        out.append((name, module))
    return out


def is_quantized_linear(module: nn.Module) -> bool:
    """A Linear whose weight is already quantized: a bitsandbytes layer (an nn.Linear subclass) or a
    Linear holding a torchao tensor subclass."""
    from torch import nn

    if type(module).__module__.startswith("bitsandbytes"):
        return True
    weight = module._parameters.get("weight")
    return isinstance(module, nn.Linear) and hasattr(weight, "__tensor_flatten__")


def _own(module: nn.Module, attr: str) -> torch.Tensor | None:
    import torch

    value = module._parameters.get(attr)
    return value if isinstance(value, torch.Tensor) else None


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at a dotted name (nn.Module.set_submodule is missing in older torch)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: the inner tensors of a wrapper subclass (torchao), the int8 data plus
    scales of a torch quantized tensor, the index and value arrays of a sparse tensor."""
    import torch

    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    if t.is_quantized:
        return _quantized_bytes(t)
    if t.layout == torch.sparse_csr:
        return sum(tensor_bytes(x) for x in (t.crow_indices(), t.col_indices(), t.values()))
    if t.layout == torch.sparse_coo:
        return tensor_bytes(t._indices()) + tensor_bytes(t._values())
    return int(t.numel() * t.element_size())


def _quantized_bytes(t: torch.Tensor) -> int:
    import torch

    data = t.numel() * t.element_size()  # qint8: one byte per element
    if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zeros = t.q_per_channel_scales(), t.q_per_channel_zero_points()
        return int(data + tensor_bytes(scales) + tensor_bytes(zeros))
    return int(data + 8 + 8)  # one float64 scale and one int64 zero point


def state_bytes(model: nn.Module) -> tuple[int, int]:
    """(parameter bytes, buffer bytes) of a model, each tensor counted once."""
    return _unique_bytes(model.parameters()), _unique_bytes(model.buffers())


def _unique_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def dense_weight_bytes(layers: Iterable[nn.Module], model: nn.Module) -> int:
    """What the layers' weights take as dense tensors of the model's float dtype: the reference that a
    storage (masks, CSR, int8, 4-bit) is compared to."""
    return sum(weight_count(m) for m in layers) * int(model_dtype(model).itemsize)


def weight_count(module: nn.Module) -> int:
    """out_features * in_features of a Linear-like layer (nn.Linear, a sparse or quantized Linear)."""
    out_f, in_f = module.__dict__.get("out_features"), module.__dict__.get("in_features")
    if not isinstance(out_f, int) or not isinstance(in_f, int):
        raise TypeError(f"{type(module).__name__} has no integer in_features/out_features")
    return out_f * in_f


def attr_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """A tensor attribute of a module, whether a parameter, a buffer or a plain attribute (prune's
    recomputed `weight`)."""
    import torch

    value = getattr(module, name)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.{name} is not a tensor")
    return value


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (float32 if none)."""
    import torch

    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
