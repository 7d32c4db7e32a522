"""The composition order of every technique: one table, read top to bottom.

Phases run in order (techniques/base.py, `Phase`); within a phase, techniques run in the order listed
here. A technique not listed runs after the listed ones of its phase, by name, so adding one that
commutes with the others edits nothing here; list it only where its place matters, and say why.
Pure data (no torch): the suite loader reads it when expanding a suite.
"""

from __future__ import annotations

ORDER: tuple[str, ...] = (
    # CONFIG: rewrite the ModelConfig before anything is built (the order among them does not matter).
    "baseline",
    "sdpa_attention",
    "tied_embeddings",
    # STRUCTURE: module rewrites of the built model.
    "cross_layer_sharing",  # first: later rewrites then act once on each shared block
    "structured_pruning",  # later rewrites (unstructured pruning, adapters) see the smaller model
    "unstructured_pruning",  # prunes what structured pruning left
    "grouped_query_attention",  # after pruning; before adapters and quantization, which see its K/V
    "lora",  # adapters after pruning, so adapters are not pruned ...
    "bottleneck_adapter",  # ... after LoRA, which adapts the Linear layers inside the sublayers
    "shared_adapter",  # outermost on the MLP output
    "fake_quantization",  # quantizers after the adapters: they quantize the frozen base, skip adapters
    "dynamic_int8",
    "weight_only_quantization",
    "pure_bf16",  # casts whatever the rewrites produced, adapters included
    "fp8_training",  # swaps Linear layers for fp8 ones last, over the final dtype
    # WRAP
    "activation_checkpointing",  # before sharding, which wraps the checkpointed blocks (torchtitan)
    "fsdp2",
    "zero1",
    # OPTIMIZER: one per case (they conflict with each other); STEP: edits of the step plan, in this
    # order (l1_regularization wraps the loss function chunked_cross_entropy set).
    "activation_offloading",
    "autocast",
    "chunked_cross_entropy",
    "gradient_accumulation",
    "l1_regularization",
    # generation's KV cache: quantized storage, then the window over it, then static allocation
    "kv_cache_quantization",
    "sliding_window_cache",
    "static_cache",
)

_RANK = {name: i for i, name in enumerate(ORDER)}


def rank(name: str) -> int:
    """Position within its phase: the table's, or after every listed technique."""
    return _RANK.get(name, len(ORDER))
