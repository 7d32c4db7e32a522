"""The analytic inputs that techniques edit: what the memory model and the FLOP formula read.

Pure (no torch): technique modules import it at module level and stay importable without torch. The
formulas themselves live in analysis/predict.py and analysis/flops.py; each technique states its own
effect on these inputs in its `adjust_prediction` and `adjust_flops` methods (techniques/base.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.models.source import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def linear_dims(cfg: ModelSpec, name: str) -> tuple[int, int]:
    """(in, out) features of a block's Linear layer by its attribute name."""
    d, f = cfg.d_model, cfg.d_ff
    return {"fc1": (d, f), "fc2": (f, d)}.get(name, (d, d))


@dataclass(frozen=True)
class BlockParts:
    """Bytes one un-checkpointed block keeps for backward, by where they are made (predict.py derives
    them). `*_matmuls` are the outputs of that sublayer's matrix products (Linear layers, QK^T, PV or
    fused attention): what selective checkpointing keeps in place of the rest."""

    stream: int  # one (b, s, h) tensor in the parameter dtype: a block's or a sublayer's input
    norms: int  # ln1's and ln2's inputs (the residual stream) and their mean/rstd
    attention_input: int  # ln1's output as the q/k/v projections' input (cast copies under autocast)
    attention: int  # q, k, v copies, probabilities (or log-sum-exp), the attention output
    mlp_input: int  # ln2's output as fc1's input
    mlp: int  # the MLP activation(s)
    other: int  # adapters' own saved tensors, autocast's cached weight copies
    attention_matmuls: int
    mlp_matmuls: int

    @property
    def total(self) -> int:
        return self.norms + self.attention_input + self.attention + self.mlp_input + self.mlp + self.other


# Bytes a checkpointed block keeps for backward, given what it would keep un-checkpointed.
SavedRule = Callable[[BlockParts], int]


@dataclass
class Shape:
    """The analytic inputs of one case. Techniques edit these; the formulas read only these."""

    cfg: ModelSpec
    batch: int
    seq: int
    param_bytes: int  # element size of weights, gradients, the residual stream
    compute_bytes: int  # element size of matmul inputs/outputs kept for backward (autocast: 2)
    workload: str = "train"  # the workload kind
    # Blocks whose backward first recomputes their forward (activation checkpointing), and what each
    # block keeps instead of its full set of saved tensors.
    checkpointed: frozenset[int] = field(default_factory=frozenset)
    saved_rule: SavedRule | None = None
    optimizer: str = (
        "adamw"  # adamw, sgd, sgd_momentum, adafactor, adamw_8bit (predict.optimizer_state_bytes)
    )
    micro_batches: int = 1  # gradient accumulation: `batch` is then one micro-batch
    head_chunks: int = 1  # chunked cross-entropy: the head's b*s*V tensors exist a chunk at a time
    share_every: int = 1  # cross-layer sharing: consecutive layers that run one block
    frozen_base: bool = False  # adapters: no base parameter trains
    # Trainable adapter tensors of the whole model (shapes), and what each block's adapters keep for backward.
    adapter_shapes: list[tuple[int, ...]] = field(default_factory=list)
    adapter_saved_bytes: int = 0
    # Under a frozen base, the first block keeps nothing upstream of its first trainable tensor (nothing
    # there requires grad): 0 = q/k/v, 1 = after attention, 2 = ln2's output, 3 = after the MLP.
    first_trainable: int = 3
    # Generation's KV cache (grouped_query_attention, kv_cache_quantization, sliding_window_cache):
    # key/value heads, stored integer width and channels per scale, tokens kept.
    kv_heads: int | None = None
    kv_bits: int | None = None
    kv_group: int | None = None
    kv_window: int | None = None
    kv_static: bool = False  # allocated whole at the prefill

    @property
    def autocast(self) -> bool:
        return self.compute_bytes != self.param_bytes

    @property
    def unique_blocks(self) -> int:
        return -(-self.cfg.n_layers // self.share_every)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    def freeze_base(self, also_train: list[str]) -> str | None:
        """An adapter technique's common rule: only its own tensors train, or why that is not modelled."""
        if also_train:
            return "also_train keeps base parts trainable: not modelled"
        if self.checkpointed or self.micro_batches > 1:
            return "a frozen base with checkpointing or accumulation is not modelled"
        if self.cfg.family != "builtin":
            return "an adapter's saved tensors are modelled on the built-in block only"
        self.frozen_base = True
        return None


@dataclass(frozen=True)
class BlockFlops:
    """Forward FLOPs of one block's matrix products over the step's tokens (flops.py derives them).
    A recomputing technique adds the parts its recomputation runs again."""

    qkv: int  # the q, k and v projections
    attention: int  # QK^T and PV
    out_proj: int
    fc1: int
    fc2: int


@dataclass
class StepFlops:
    """FLOPs of one step. Techniques that add work the model does not need (recomputation) add it to
    `recomputed`; `model` stays the MFU numerator of the dense model as the suite defines it."""

    model: int
    matmul: int
    block: BlockFlops  # one block's forward matmuls, for techniques that recompute some of them
    recomputed: int = 0
    compute_dtype: str = "float32"  # the dtype the matmuls run in: MFU's peak is looked up for it
