"""What a built model's weights occupy as stored, and how many elements of a dense model it stands for.

One figure for every technique: `stored_weight_bytes` counts each storage the model holds once (tied and
shared weights, views), whatever form it takes: a plain parameter or buffer, the inner tensors of a
wrapper subclass (torchao), int8 data plus scales (torch.ao dynamic int8, whose weights live in packed
params outside `parameters()`), packed 4-bit data plus its QuantState (bitsandbytes), CSR arrays, or a
pruning mask with its `weight_orig` and the recomputed `weight`.

`param_count` is the element count of the dense model the built one represents: a 4-bit layer packs two
elements per byte and a CSR layer keeps only its non-zeros, but both stand for out x in weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def stored_weight_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds, each underlying storage counted once."""
    # All held at once: torch.ao's unpacked weights are fresh objects, keyed by id, and a freed one's id
    # could be reused by the next.
    held = list(_held_tensors(model))
    # FSDP2 shards each parameter over the ranks (a DTensor): the model's bytes are its global shape's,
    # as param_bytes counts them, not the one rank's shard its storage holds.
    sharded = {id(t): t for t in held if _is_dtensor(t)}
    global_bytes = sum(int(t.numel()) * int(t.element_size()) for t in sharded.values())
    leaves = [leaf for t in held if id(t) not in sharded for leaf in _leaves(t)]
    seen: set[tuple[str, int]] = set()
    return global_bytes + sum(_count_once(leaf, seen) for leaf in leaves)


def _is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return False
    return isinstance(t, DTensor)


def dense_param_count(model: nn.Module) -> int:
    """Elements of the dense model this one represents: each parameter once (by identity), with a
    quantized or sparse Linear counted as its out x in weight (+ bias), not its packed elements."""
    import torch

    seen: set[int] = set()
    total = 0
    for module in model.modules():
        logical = _logical_weight_count(module)
        for name, p in module._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            is_weight = name in ("weight", "weight_orig")
            total += logical if (is_weight and logical is not None) else int(p.numel())
        if logical is not None and not _has_weight_param(module):
            total += logical  # dynamic int8 (packed params) and CSR (buffers): no weight parameter
            bias = _packed_bias(module)
            if isinstance(bias, torch.Tensor):
                total += int(bias.numel())
    return total


def _logical_weight_count(module: nn.Module) -> int | None:
    """out x in for a Linear whose weight is not held as a plain dense parameter, else None."""
    from harness.techniques import _util

    kind = type(module).__module__
    quantized = kind.startswith(("bitsandbytes", "torch.ao.nn.quantized"))
    if not (quantized or _util.is_quantized_linear(module) or hasattr(module, "weight_csr")):
        return None
    try:
        return _util.weight_count(module)
    except TypeError:
        return None


def _has_weight_param(module: nn.Module) -> bool:
    return any(module._parameters.get(n) is not None for n in ("weight", "weight_orig"))


def _packed_bias(module: nn.Module) -> Any:
    packed = getattr(module, "_packed_params", None)
    if packed is None or not hasattr(packed, "_weight_bias"):
        return None
    return packed._weight_bias()[1]


def _held_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Parameters, buffers, tensor attributes (prune's recomputed weight), torch.ao's packed weight and
    bias, and bitsandbytes' scales and quantization state of every module."""
    import torch

    for module in model.modules():
        yield from (p for p in module._parameters.values() if p is not None)
        yield from (b for b in module._buffers.values() if b is not None)
        yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            yield from (t for t in packed._weight_bias() if isinstance(t, torch.Tensor))
        yield from _bnb_side_tensors(module)


def _bnb_side_tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    import torch

    weight = module._parameters.get("weight")
    scb = getattr(weight, "SCB", None)
    if scb is None:  # Linear8bitLt moves the per-row scales to its MatmulLtState on the first forward
        scb = getattr(getattr(module, "state", None), "SCB", None)
    if isinstance(scb, torch.Tensor):
        yield scb
    state = getattr(weight, "quant_state", None)
    while state is not None:
        for value in (state.absmax, state.code, getattr(state, "offset", None)):
            if isinstance(value, torch.Tensor):
                yield value
        state = getattr(state, "state2", None)


def _leaves(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """The plain tensors that hold a tensor's bytes: a wrapper subclass's inner tensors, a sparse
    tensor's index and value arrays, or the tensor itself."""
    import torch

    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n)
            if isinstance(inner, torch.Tensor):
                yield from _leaves(inner)
        return
    if t.layout == torch.sparse_csr:
        yield from (t.crow_indices(), t.col_indices(), t.values())
        return
    if t.layout == torch.sparse_coo:
        yield from (t._indices(), t._values())
        return
    yield t


def _count_once(t: torch.Tensor, seen: set[tuple[str, int]]) -> int:
    from harness.techniques import _util

    if t.is_quantized:  # no shareable storage pointer to key on: its own int8 data + scales
        key = ("q", id(t))
        size = _util.tensor_bytes(t)
    elif t.device.type == "meta":
        return 0
    else:
        storage = t.untyped_storage()
        key = (str(t.device), int(storage.data_ptr()))
        size = int(storage.nbytes())
    if key in seen:
        return 0
    seen.add(key)
    return size
