"""Analytic prediction of a case's tensor bytes per category, from shapes, dtypes and techniques.

The activation formula is Korthikanti et al. 2022's per-layer count re-derived for this repository's
model (see techniques.md, "Formulas"): pre-LN blocks with separate q/k/v projections, ReLU or GELU
MLP, learned or sinusoidal positions, no dropout. Counting what each op saves for backward, one
block keeps (N = b*s*h, F = b*s*d_ff, S = b*a*s^2 elements):

    residual stream (block input, mid-block sum)           2N   param dtype
    LayerNorm outputs, as the linear layers' inputs          2N   (autocast: 4N casts, q/k/v cast apart)
    q, k, v (contiguous copies kept by matmul / SDPA)       3N
    attention output (out_proj input)                        N
    attention probabilities (explicit only)                  S   (+ the s*s bool causal mask)
    SDPA log-sum-exp (fused only)                            b*a*s fp32
    MLP: ReLU output F; GELU input and output 2F
    LayerNorm mean and rstd                                  4*b*s fp32

i.e. 16*e*sbh + e*a*s^2*b bytes per layer for GELU with d_ff = 4h, as techniques.md states. The head
keeps the final LayerNorm's input and output (2N) and the fp32 log-softmax (4*b*s*V bytes). The
steady-state training peak is found by walking the backward pass (head, then blocks last to first)
and taking the largest of: saved activations still alive + gradients made so far + the transient
tensors of the op running then (8*b*s*V bytes at the loss, as techniques.md says; 2F of MLP
gradients, or 2S of softmax gradients, inside a block), and the optimizer step (all gradients).
Parameters and AdamW state are present throughout. The optimizer is assumed to be the default AdamW:
a technique that brings its own optimizer has no adjustment here, so its prediction is unavailable.

Extending: a technique the formula does not know makes the prediction unavailable (it never
guesses). A technique declares its effect by registering an adjustment here:

    @register_adjust("my_technique")
    def _mine(shape: Shape, options: Mapping[str, Any]) -> str | None:
        shape.compute_bytes = 2      # edit the analytic inputs ...
        return None                  # ... or return why its effect cannot be derived
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.case import CaseSpec
from harness.models.config import ModelConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

Adjust = Callable[["Shape", Mapping[str, Any]], "str | None"]
ADJUSTERS: dict[str, Adjust] = {}


def register_adjust(name: str) -> Callable[[Adjust], Adjust]:
    """Register how technique `name` changes the analytic inputs (see the module docstring)."""

    def deco(fn: Adjust) -> Adjust:
        ADJUSTERS[name] = fn
        return fn

    return deco


@dataclass
class Shape:
    """The analytic inputs of one case. Adjusters edit these; the formulas read only these."""

    cfg: ModelConfig
    batch: int
    seq: int
    param_bytes: int  # element size of weights, gradients, the residual stream
    compute_bytes: int  # element size of matmul inputs/outputs kept for backward (autocast: 2)
    checkpointed: frozenset[int] = field(default_factory=frozenset)  # block indices

    @property
    def autocast(self) -> bool:
        return self.compute_bytes != self.param_bytes


@register_adjust("baseline")
def _baseline(shape: Shape, options: Mapping[str, Any]) -> str | None:
    return None


@register_adjust("sdpa_attention")
def _sdpa(shape: Shape, options: Mapping[str, Any]) -> str | None:
    shape.cfg = shape.cfg.replace(attention="sdpa")
    return None


@register_adjust("activation_checkpointing")
def _checkpointing(shape: Shape, options: Mapping[str, Any]) -> str | None:
    k = int(options.get("every_k_blocks", 1))
    shape.checkpointed = frozenset(range(0, shape.cfg.n_layers, k))
    return None


@register_adjust("autocast")
def _autocast(shape: Shape, options: Mapping[str, Any]) -> str | None:
    shape.compute_bytes = DTYPE_BYTES[str(options.get("dtype", "bfloat16"))]
    return None


def shape_for(case: CaseSpec) -> Shape | str:
    """The case's analytic inputs with every technique's adjustment applied, or why there are none."""
    e = DTYPE_BYTES[case.dtype]
    shape = Shape(ModelConfig(**case.model), case.batch_size, case.seq_len, e, e)
    for tech in case.techniques:
        adjust = ADJUSTERS.get(tech.name)
        if adjust is None:
            return (
                f"no prediction rule for technique {tech.name!r}: register one with predict.register_adjust"
            )
        reason = adjust(shape, tech.config)
        if reason:
            return f"{tech.name}: {reason}"
    return shape


# ---- persistent state ------------------------------------------------------------------------------


def block_tensors(cfg: ModelConfig) -> list[int]:
    """Element counts of one block's parameter tensors, in the order backward produces their grads."""
    d, f = cfg.d_model, cfg.d_ff
    out = [d, d]  # ln2
    out += [d * f, d, f * d, f] if cfg.bias else [d * f, f * d]  # fc2, fc1
    out += [d * d, d] * 4 if cfg.bias else [d * d] * 4  # out, v, k, q projections
    return [*out, d, d]  # ln1


def head_tensors(cfg: ModelConfig) -> list[int]:
    # A tied head's gradient lands in the token embedding's tensor, made at the same moment.
    return [cfg.vocab_size * cfg.d_model, cfg.d_model, cfg.d_model]  # lm_head, ln_f


def param_tensors(cfg: ModelConfig) -> list[int]:
    """Every parameter tensor's element count (gradients, AdamW's per-tensor step counters)."""
    embed = [cfg.max_seq_len * cfg.d_model] if cfg.pos_encoding == "learned" else []
    if not cfg.tie_embeddings:
        embed.append(cfg.vocab_size * cfg.d_model)
    return head_tensors(cfg) + block_tensors(cfg) * cfg.n_layers + embed


def adamw_state_bytes(cfg: ModelConfig, param_bytes: int) -> int:
    """exp_avg and exp_avg_sq in the parameter dtype, plus one fp32 `step` scalar per tensor (CPU,
    non-capturable AdamW keeps `step` as a 0-dim float32 tensor)."""
    tensors = param_tensors(cfg)
    return 2 * param_bytes * sum(tensors) + 4 * len(tensors)


# ---- activations ----------------------------------------------------------------------------------


def block_saved_bytes(sh: Shape) -> int:
    """Bytes one un-checkpointed block keeps for backward (see the module docstring)."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, f = b * s * c.d_model, b * s * c.d_ff
    ea, ec = sh.param_bytes, sh.compute_bytes
    total = 2 * n * ea  # residual stream: block input and mid-block sum
    total += 4 * n * ec if sh.autocast else 2 * n * ea  # linear inputs (autocast casts each apart)
    total += 4 * n * ec  # q, k, v and the attention output
    if c.attention == "explicit":
        total += b * c.n_heads * s * s * ec + s * s  # probabilities + bool causal mask
    else:
        total += 4 * b * c.n_heads * s  # log-sum-exp, fp32
    total += (2 if c.activation == "gelu" else 1) * f * ec
    total += 4 * 4 * b * s  # two LayerNorms' mean and rstd
    if sh.autocast:
        total += (4 * c.d_model * c.d_model + 2 * c.d_model * c.d_ff) * ec  # cached bf16 weight copies
    return total


def head_saved_bytes(sh: Shape) -> int:
    """ln_f input and output (output cast once for the head under autocast) and fp32 log-probs."""
    n = sh.batch * sh.seq * sh.cfg.d_model
    ln_out = n * sh.compute_bytes if sh.autocast else n * sh.param_bytes
    cast_w = sh.cfg.vocab_size * sh.cfg.d_model * sh.compute_bytes if sh.autocast else 0
    return (
        n * sh.param_bytes
        + ln_out
        + 4 * sh.batch * sh.seq * sh.cfg.vocab_size
        + 4 * 2 * sh.batch * sh.seq
        + cast_w
    )


def embed_saved_bytes(sh: Shape) -> int:
    """The int64 inputs and targets, and the position indices (tracked once an op touches them)."""
    return 2 * 8 * sh.batch * sh.seq + 8 * sh.seq


def saved_per_block(sh: Shape) -> list[int]:
    n_bytes = sh.batch * sh.seq * sh.cfg.d_model * sh.param_bytes
    full = block_saved_bytes(sh)
    # A checkpointed block keeps only its input; everything else is recomputed in its backward.
    return [n_bytes if i in sh.checkpointed else full for i in range(sh.cfg.n_layers)]


# ---- the backward walk ----------------------------------------------------------------------------


@dataclass
class Moment:
    """Bytes alive at one moment of the step, by category."""

    activations: int
    gradients: int
    temporaries: int


def _block_moments(sh: Shape, below: int, grads: int) -> list[Moment]:
    """Moments inside one block's backward: `below` = saved bytes of this block (recomputed in full
    when checkpointed) and everything under it; `grads` = parameter gradients made before it."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, f, big_s = b * s * c.d_model, b * s * c.d_ff, b * c.n_heads * s * s
    ea, ec = sh.param_bytes, sh.compute_bytes
    fc2_grads = (c.d_model * c.d_ff + c.d_model) * ea
    mlp = Moment(below, grads + fc2_grads, n * ea + 2 * f * ec)  # flowing grad + two MLP-sized grads
    mlp_saved = (2 if c.activation == "gelu" else 1) * f * ec + n * (ec if sh.autocast else ea) + n * ea
    # By attention's backward: gradients of ln2, fc2, fc1 and the output projection exist.
    mlp_grads = sum(block_tensors(c)[: 8 if c.bias else 5]) * ea
    # Explicit: residual grad, grad of v, grads of probabilities and of scores.
    # SDPA: residual grad, grad of the output, grads of q, k, v.
    attn_tmp = 2 * n * ea + 2 * big_s * ec if c.attention == "explicit" else n * ea + 4 * n * ec
    attn = Moment(below - mlp_saved, grads + mlp_grads, attn_tmp)
    return [mlp, attn]


def train_moments(sh: Shape) -> list[Moment]:
    """Candidate peaks of a steady-state training step: the loss's backward, each block's backward,
    the optimizer step."""
    c = sh.cfg
    bsv = sh.batch * sh.seq * c.vocab_size
    blocks = saved_per_block(sh)
    saved = embed_saved_bytes(sh) + sum(blocks) + head_saved_bytes(sh)
    # The loss: log-probs saved, plus the gradients of the log-probs and of the logits (fp32).
    moments = [Moment(saved, 0, 8 * bsv)]
    grads = sum(head_tensors(c)) * sh.param_bytes
    alive = saved - head_saved_bytes(sh)
    full = block_saved_bytes(sh)
    for i in reversed(range(c.n_layers)):
        # Checkpointed: the block's input is kept; its backward first recomputes the rest.
        below = alive - blocks[i] + full
        moments += _block_moments(sh, below, grads)
        alive -= blocks[i]
        grads += sum(block_tensors(c)) * sh.param_bytes
    # The optimizer step: every gradient, and AdamW's (non-foreach) per-tensor temporaries, about two
    # of the largest tensor (sqrt of exp_avg_sq, then its scaled copy).
    tensors = param_tensors(c)
    moments.append(
        Moment(embed_saved_bytes(sh), sum(tensors) * sh.param_bytes, 2 * max(tensors) * sh.param_bytes)
    )
    return moments


def infer_moments(sh: Shape) -> list[Moment]:
    """Candidate peaks of one forward under inference mode: nothing is saved, so only what a block's
    forward holds at once (its input, the LayerNorm output, q/k/v, two score-sized tensors) and the
    head's logits and fp32 log-probs."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, f = b * s * c.d_model, b * s * c.d_ff
    ea, ec = sh.param_bytes, sh.compute_bytes
    batch = embed_saved_bytes(sh)
    attn = 2 * b * c.n_heads * s * s * ec + s * s if c.attention == "explicit" else n * ec
    ln_in = n * ea + (n * ec if sh.autocast else 0)
    block = n * ea + ln_in + 3 * n * ec + attn
    mlp = n * ea + ln_in + f * ec * 2
    bsv = b * s * c.vocab_size
    head = n * ea + bsv * ec + bsv * 4 + (bsv * 4 if sh.autocast else 0)
    return [Moment(batch + max(block, mlp, head), 0, 0)]


def predict(case: CaseSpec) -> dict[str, Any]:
    """Predicted bytes per category at the step's peak, or `prediction_unavailable_reason`.

    Keys: parameters_bytes, optimizer_state_bytes, and at the predicted peak activations_bytes
    (saved for backward), gradients_bytes, temporaries_bytes, plus tensor_peak_bytes (their sum) and
    saved_activations_bytes (everything the forward keeps, at the start of backward).
    """
    shape = shape_for(case)
    if isinstance(shape, str):
        return {"prediction_unavailable_reason": shape}
    if case.workload_kind not in ("train", "infer"):
        return {"prediction_unavailable_reason": f"no formula for workload kind {case.workload_kind!r}"}
    cfg = shape.cfg
    params = sum(param_tensors(cfg)) * shape.param_bytes
    train = case.workload_kind == "train"
    optimizer = adamw_state_bytes(cfg, shape.param_bytes) if train else 0
    moments = train_moments(shape) if train else infer_moments(shape)
    peak = max(moments, key=lambda m: m.activations + m.gradients + m.temporaries)
    out = {
        "parameters_bytes": params,
        "optimizer_state_bytes": optimizer,
        "activations_bytes": peak.activations,
        "gradients_bytes": peak.gradients,
        "temporaries_bytes": peak.temporaries,
        "tensor_peak_bytes": params + optimizer + peak.activations + peak.gradients + peak.temporaries,
    }
    if train:
        out["saved_activations_bytes"] = moments[0].activations
    return out
