"""Analytic prediction of a case's tensor bytes per category, from shapes, dtypes and techniques.

The activation formula is Korthikanti et al. 2022's per-layer count re-derived for this repository's
model (see docs/techniques.md, "Formulas"): pre-LN blocks with separate q/k/v projections, ReLU or GELU
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

i.e. 16*e*sbh + e*a*s^2*b bytes per layer for GELU with d_ff = 4h, as docs/techniques.md states. The head
keeps the final LayerNorm's input and output (2N) and the fp32 log-softmax (4*b*s*V bytes). The
steady-state training peak is found by walking the backward pass (head, then blocks last to first)
and taking the largest of: saved activations still alive + gradients made so far + the transient
tensors of the op running then (8*b*s*V bytes at the loss, as docs/techniques.md says; 2F of MLP
gradients, or 2S of softmax gradients, inside a block), and the optimizer step (all gradients).
Parameters and optimizer state are present throughout (AdamW unless an optimizer technique's rule
says otherwise: SGD, Adafactor, bitsandbytes' 8-bit AdamW, see `optimizer_state_bytes`).

Rules for other techniques edit the same inputs: gradient accumulation (one micro-batch's activations,
every gradient already present in the last micro-batch's backward), tied embeddings and cross-layer
sharing (fewer parameter tensors, activations unchanged), pure bf16 (2-byte everything but the fp32
log-probs), chunked cross-entropy (no saved log-probs; one chunk's logits at a time), and a frozen base
under LoRA / adapters (gradients and state for the adapters only; frozen Linear layers keep no input;
block 0 keeps nothing before its first trainable tensor; the adapters' own inputs and (b, s, r) tensors).

Extending: each technique states its own effect in its `adjust_prediction` method (techniques/base.py),
editing the analytic inputs (analysis/shape.py); a technique without one makes the prediction
unavailable, with the reason (it never guesses). This module holds only the base formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import techniques as techreg
from harness.analysis.shape import DTYPE_BYTES as DTYPE_BYTES  # re-exported: callers read it here
from harness.analysis.shape import BlockParts, numel
from harness.analysis.shape import Shape as Shape
from harness.case import CaseSpec
from harness.models.config import ModelConfig
from harness.models.source import ModelSpec, config_of, spec_of


def base_shape(case: CaseSpec) -> Shape | str:
    """The case's analytic inputs before any technique: its model, batch, sequence and dtype, or why
    there are none (a factory module's shapes are its own)."""
    e = DTYPE_BYTES[case.dtype]
    spec = spec_of(config_of(case.model))
    if spec is None:
        return "a factory module's shapes are its own: no analytic formula (measured figures stand alone)"
    return Shape(spec, case.batch_size, case.seq_len, e, e, workload=case.workload_kind)


def shape_for(case: CaseSpec) -> Shape | str:
    """The case's analytic inputs with every technique's own adjustment applied in composition order,
    or why there are none."""
    shape = base_shape(case)
    if isinstance(shape, str):
        return shape
    for tech in techreg.compose((t.name, t.config) for t in case.techniques):
        reason = tech.adjust_prediction(shape)
        if reason:
            return f"{tech.name}: {reason}"
    return shape


# ---- persistent state ------------------------------------------------------------------------------


def _spec(cfg: ModelSpec | ModelConfig) -> ModelSpec:
    """A built-in ModelConfig's spec (callers may pass either)."""
    if isinstance(cfg, ModelSpec):
        return cfg
    spec = spec_of(cfg)
    assert spec is not None  # a ModelConfig always has one
    return spec


def _norm_shapes(cfg: ModelSpec) -> list[tuple[int, ...]]:
    d = cfg.d_model
    return [(d,), (d,)] if cfg.norm == "layernorm" else [(d,)]  # RMSNorm: a weight, no bias


def _linear(d_out: int, d_in: int, bias: bool) -> list[tuple[int, ...]]:
    return [(d_out, d_in), (d_out,)] if bias else [(d_out, d_in)]


def _mlp_shapes(cfg: ModelSpec) -> list[tuple[int, ...]]:
    """fc2, fc1 (or SwiGLU's down, up, gate), in the order backward produces their grads."""
    d, f, b = cfg.d_model, cfg.d_ff, cfg.mlp_bias
    ins = 2 if cfg.mlp == "swiglu" else 1
    return _linear(d, f, b) + _linear(f, d, b) * ins


def _attn_shapes(cfg: ModelSpec) -> list[tuple[int, ...]]:
    """out, v, k, q projections: K and V are n_kv_heads * head_dim wide (GQA)."""
    d, q, kv = cfg.d_model, cfg.q_dim, cfg.kv_dim
    if cfg.family == "gpt2":  # one fused c_attn projection for q, k and v
        return _linear(d, q, cfg.out_bias) + _linear(q + 2 * kv, d, cfg.qkv_bias)
    return _linear(d, q, cfg.out_bias) + _linear(kv, d, cfg.qkv_bias) * 2 + _linear(q, d, cfg.qkv_bias)


def block_shapes(cfg: ModelSpec | ModelConfig) -> list[tuple[int, ...]]:
    """Shapes of one block's parameter tensors, in the order backward produces their grads."""
    cfg = _spec(cfg)
    return _norm_shapes(cfg) + _mlp_shapes(cfg) + _attn_shapes(cfg) + _norm_shapes(cfg)  # ln2 ... ln1


def head_shapes(cfg: ModelSpec | ModelConfig) -> list[tuple[int, ...]]:
    # A tied head's gradient lands in the token embedding's tensor, made at the same moment.
    cfg = _spec(cfg)
    return [(cfg.vocab_size, cfg.d_model), *_norm_shapes(cfg)]  # lm_head, ln_f


def param_shapes(cfg: ModelSpec | ModelConfig, n_blocks: int | None = None) -> list[tuple[int, ...]]:
    """Every parameter tensor's shape; `n_blocks` distinct blocks (cross-layer sharing: fewer)."""
    cfg = _spec(cfg)
    embed = [(cfg.max_seq_len, cfg.d_model)] if cfg.pos_encoding == "learned" else []
    if not cfg.tie_embeddings:
        embed.append((cfg.vocab_size, cfg.d_model))
    blocks = cfg.n_layers if n_blocks is None else n_blocks
    return head_shapes(cfg) + block_shapes(cfg) * blocks + embed


def _numel(shape: tuple[int, ...]) -> int:
    return numel(shape)


def block_tensors(cfg: ModelSpec | ModelConfig) -> list[int]:
    """Element counts of one block's parameter tensors, in the order backward produces their grads."""
    return [_numel(t) for t in block_shapes(cfg)]


def head_tensors(cfg: ModelSpec | ModelConfig) -> list[int]:
    return [_numel(t) for t in head_shapes(cfg)]


def param_tensors(cfg: ModelSpec | ModelConfig, n_blocks: int | None = None) -> list[int]:
    """Every parameter tensor's element count (gradients, AdamW's per-tensor step counters)."""
    return [_numel(t) for t in param_shapes(cfg, n_blocks)]


def model_shapes(sh: Shape) -> list[tuple[int, ...]]:
    """Every parameter tensor of the case's model: the base (shared blocks once) and the adapters."""
    return param_shapes(sh.cfg, sh.unique_blocks) + sh.adapter_shapes


def trainable_shapes(sh: Shape) -> list[tuple[int, ...]]:
    """The tensors that get a gradient and optimizer state: the adapters only, under a frozen base."""
    return list(sh.adapter_shapes) if sh.frozen_base else model_shapes(sh)


def adamw_state_bytes(cfg: ModelSpec | ModelConfig, param_bytes: int) -> int:
    """exp_avg and exp_avg_sq in the parameter dtype, plus one fp32 `step` scalar per tensor (CPU,
    non-capturable AdamW keeps `step` as a 0-dim float32 tensor)."""
    tensors = param_tensors(cfg)
    return 2 * param_bytes * sum(tensors) + 4 * len(tensors)


# bitsandbytes' 8-bit optimizers: tensors below min_8bit_size elements keep 32-bit state; larger ones one
# uint8 per element per moment with one fp32 absmax per block of 256, and share two 256-entry fp32
# quantization maps (one storage for the whole optimizer).
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCK = 256
BNB_QMAPS = 2 * 256 * 4


def _adafactor_tensor(shape: tuple[int, ...], e: int) -> int:
    # torch.optim.Adafactor: a matrix keeps row_var (rows, 1) and col_var (1, cols), a vector a full
    # `variance`; no first moment; every tensor an fp32 `step`.
    if len(shape) >= 2:
        return e * (_numel(shape[:-1]) + _numel(shape[:-2]) * shape[-1]) + 4
    return e * _numel(shape) + 4


def _bnb_8bit_tensor(shape: tuple[int, ...], e: int) -> int:
    n = _numel(shape)
    if n < BNB_MIN_8BIT_SIZE:
        return 2 * 4 * n  # state1, state2 in fp32 (bitsandbytes keeps `step` as a Python int)
    return 2 * (n + 4 * -(-n // BNB_BLOCK))


def optimizer_state_bytes(sh: Shape) -> int:
    """State of the case's optimizer over its trainable tensors (element size `param_bytes`)."""
    shapes, e = trainable_shapes(sh), sh.param_bytes
    if sh.optimizer == "sgd":
        return 0  # momentum 0: torch's SGD keeps nothing
    if sh.optimizer == "sgd_momentum":
        return e * sum(_numel(t) for t in shapes)  # one momentum buffer, no step counter
    if sh.optimizer == "adafactor":
        return sum(_adafactor_tensor(t, e) for t in shapes)
    if sh.optimizer == "adamw_8bit":
        big = any(_numel(t) >= BNB_MIN_8BIT_SIZE for t in shapes)
        return sum(_bnb_8bit_tensor(t, e) for t in shapes) + (BNB_QMAPS if big else 0)
    return 2 * e * sum(_numel(t) for t in shapes) + 4 * len(shapes)  # AdamW


# ---- activations ----------------------------------------------------------------------------------


def block_parts(sh: Shape) -> BlockParts:
    """Bytes one un-checkpointed block keeps for backward, by part (see the module docstring)."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, f = b * s * c.d_model, b * s * c.d_ff
    ea, ec = sh.param_bytes, sh.compute_bytes
    # A frozen Linear needs no input for its (absent) weight gradient; autocast casts each linear's input
    # apart (q, k and v each cast ln1's output; fc1 casts ln2's).
    attention_input, mlp_input = (
        (0, 0) if sh.frozen_base else (3 * n * ec, n * ec) if sh.autocast else (n * ea, n * ea)
    )
    # Residual stream (block input and mid-block sum); mean and rstd (RMSNorm: rsqrt) of two norms.
    norms = 2 * n * ea + (4 if c.norm == "layernorm" else 2) * 4 * b * s
    if c.norm == "rmsnorm":  # x * rsqrt(mean(x^2)) is kept apart from weight * it (transformers' RMSNorm)
        norms += 2 * n * ea
        if ea < 4:  # it normalizes in fp32: the fp32 copy of its input is kept too
            norms += 2 * 4 * n
    nq = b * s * c.q_dim
    qkv = (_qkvo_saved(sh) - (0 if sh.frozen_base else nq)) * ec  # q, k, v (GQA: repeated K/V)
    if c.attention == "explicit":
        probabilities = b * c.n_heads * s * s * ec
        probabilities += s * s if c.family == "builtin" else 0  # the built-in's bool causal mask
        if c.mlp == "swiglu" and ec < 4:  # Llama-style eager softmax runs in fp32 and keeps that output too
            probabilities += 4 * b * c.n_heads * s * s
        attention_matmuls = qkv + b * c.n_heads * s * s * ec + nq * ec  # q/k/v, QK^T, PV
    else:
        probabilities = 4 * b * c.n_heads * s  # log-sum-exp, fp32
        attention_matmuls = qkv + nq * ec + probabilities  # q/k/v, the fused output and its lse
    swiglu = c.mlp == "swiglu"
    weights = 2 * c.d_model * (c.q_dim + c.kv_dim) + (3 if swiglu else 2) * c.d_model * c.d_ff
    casts = weights * ec if sh.autocast else 0  # autocast's cached bf16 weight copies
    return BlockParts(
        stream=n * ea,
        norms=norms,
        attention_input=attention_input,
        # q, k, v and (for out_proj's weight) the attention output
        attention=_qkvo_saved(sh) * ec + probabilities,
        mlp_input=mlp_input,
        mlp=_mlp_saved(sh) * f * ec,
        other=sh.adapter_saved_bytes + casts,  # adapters' own tensors, autocast's cached weight copies
        attention_matmuls=attention_matmuls + n * ec,  # + out_proj's output
        mlp_matmuls=(2 if swiglu else 1) * f * ec + n * ec,  # fc1's (gate's and up's) and fc2's outputs
    )


def block_saved_bytes(sh: Shape) -> int:
    """Bytes one un-checkpointed block keeps for backward (see the module docstring)."""
    return block_parts(sh).total


def _qkvo_saved(sh: Shape) -> int:
    """Elements of q, k, v and the attention output kept for backward. Rotary embeddings keep the rotated
    q and k (the cos/sin they were multiplied by are shared by all layers); under GQA transformers' eager
    attention repeats K and V to every query head (repeat_kv copies), which the matmuls keep."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    nq, nkv = b * s * c.q_dim, b * s * c.kv_dim
    kv = nq if c.family != "builtin" and c.n_kv_heads < c.n_heads and c.attention == "explicit" else nkv
    out = 0 if sh.frozen_base else nq  # the attention output, out_proj's input for its weight gradient
    return nq + 2 * kv + out


def _mlp_saved(sh: Shape) -> int:
    """MLP activations kept, in units of b*s*d_ff: ReLU's output serves both; GELU keeps its input and
    output; GPT-2's Python tanh GELU keeps its input, tanh, 0.5x, 1 + tanh and the product; SwiGLU keeps
    the gate's output, SiLU's output, up's output and their product."""
    mlp = sh.cfg.mlp
    if mlp == "swiglu":
        return 4
    if mlp == "gelu_new":
        return 5
    return 2 if mlp == "gelu" and not sh.frozen_base else 1


def head_saved_bytes(sh: Shape) -> int:
    """ln_f input and output (output cast once for the head under autocast) and fp32 log-probs."""
    n = sh.batch * sh.seq * sh.cfg.d_model
    ln_out = n * sh.compute_bytes if sh.autocast else n * sh.param_bytes
    if sh.cfg.norm == "rmsnorm":
        ln_out += n * sh.param_bytes  # the normalized input, kept apart from weight * it
        ln_out += 4 * n if sh.param_bytes < 4 else 0  # and its fp32 copy when the model is not fp32
    if sh.frozen_base:
        ln_out = 0  # the frozen head keeps no input for a weight gradient
    cast_w = sh.cfg.vocab_size * sh.cfg.d_model * sh.compute_bytes if sh.autocast else 0
    # Chunked cross-entropy keeps only views of ln_f's output per chunk; the log-probs are recomputed.
    log_probs = 4 * sh.batch * sh.seq * sh.cfg.vocab_size if sh.head_chunks == 1 else 0
    return n * sh.param_bytes + ln_out + log_probs + 4 * 2 * sh.batch * sh.seq + cast_w


def embed_saved_bytes(sh: Shape) -> int:
    """The int64 inputs and targets, and the position indices (tracked once an op touches them)."""
    rotary = 2 * 4 * sh.seq * sh.cfg.head_dim if sh.cfg.positions == "rotary" else 0  # cos, sin (fp32)
    return 2 * 8 * sh.batch * sh.seq + 8 * sh.seq + rotary


def frozen_prefix_bytes(sh: Shape) -> int:
    """What block 0 does not keep under a frozen base: everything before its first trainable tensor."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, ea, ec = b * s * c.d_model, sh.param_bytes, sh.compute_bytes
    attention = b * c.n_heads * s * s * ec + s * s if c.attention == "explicit" else 4 * b * c.n_heads * s
    steps = [
        n * ea + 8 * b * s,  # ln1's input and statistics
        3 * n * ec + attention,  # q, k, v and the probabilities (or log-sum-exp)
        n * ea + 8 * b * s,  # ln2's input and statistics
        b * s * c.d_ff * ec,  # the MLP activation
    ]
    return sum(steps[: sh.first_trainable + 1])


def saved_per_block(sh: Shape) -> list[int]:
    parts = block_parts(sh)
    # A checkpointed block keeps what its technique's rule says; the rest is recomputed in its backward.
    kept = parts.total if sh.saved_rule is None else sh.saved_rule(parts)
    out = [kept if i in sh.checkpointed else parts.total for i in range(sh.cfg.n_layers)]
    if sh.frozen_base:
        out[0] -= frozen_prefix_bytes(sh)
    return out


# ---- the backward walk ----------------------------------------------------------------------------


@dataclass
class Moment:
    """Bytes alive at one moment of the step, by category."""

    activations: int
    gradients: int
    temporaries: int


def _block_moments(sh: Shape, below: int, grads: int, new_grads: bool) -> list[Moment]:
    """Moments inside one block's backward: `below` = saved bytes of this block (recomputed in full
    when checkpointed) and everything under it; `grads` = parameter gradients made before it;
    `new_grads`: whether this block's backward creates its parameters' gradient tensors."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, f, big_s = b * s * c.d_model, b * s * c.d_ff, b * c.n_heads * s * s
    ea, ec = sh.param_bytes, sh.compute_bytes
    fc2_grads = (c.d_model * c.d_ff + c.d_model * c.mlp_bias) * ea if new_grads else 0
    # Flowing grad + two MLP-sized grads (SwiGLU: three, the gate's, SiLU's and up's).
    mlp = Moment(below, grads + fc2_grads, n * ea + (3 if c.mlp == "swiglu" else 2) * f * ec)
    mlp_saved = _mlp_saved(sh) * f * ec + n * (ec if sh.autocast else ea) + n * ea
    mlp_saved += n * ea if c.norm == "rmsnorm" else 0
    # By attention's backward: gradients of ln2, fc2, fc1 and the output projection exist.
    side = len(_norm_shapes(c)) + len(_mlp_shapes(c)) + (2 if c.out_bias else 1)  # ln2, MLP, out proj
    mlp_grads = sum(block_tensors(c)[:side]) * ea if new_grads else 0
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
    e = sh.param_bytes
    all_grads = sum(_numel(t) for t in trainable_shapes(sh)) * e
    # Accumulation: the last micro-batch's backward adds into gradients the earlier ones made. A frozen
    # base: only the (small) adapter gradients, counted from the start.
    upfront = sh.micro_batches > 1 or sh.frozen_base
    if sh.head_chunks == 1:
        # The loss: log-probs saved, plus the gradients of the log-probs and of the logits (fp32).
        moments = [Moment(saved, all_grads if upfront else 0, 8 * bsv)]
    else:
        # One checkpointed chunk at a time: its recomputed logits and log-probs, and their gradients.
        chunk = -(-bsv // sh.head_chunks)
        moments = [Moment(saved + chunk * (sh.compute_bytes + 4), all_grads if upfront else 0, 8 * chunk)]
    grads = all_grads if upfront else sum(head_tensors(c)) * e
    alive = saved - head_saved_bytes(sh)
    full = block_saved_bytes(sh)
    share = sh.share_every
    for i in reversed(range(c.n_layers)):
        # Checkpointed: the block's input is kept; its backward first recomputes the rest.
        below = alive - blocks[i] + full
        # A block shared by several layers gets its gradients at the backward of its group's last layer.
        new = not upfront and (i == c.n_layers - 1 or (i + 1) % share == 0)
        moments += _block_moments(sh, below, grads, new)
        alive -= blocks[i]
        grads += sum(block_tensors(c)) * e if new else 0
    # The optimizer step: every gradient, and AdamW's (non-foreach) per-tensor temporaries, about two
    # of the largest tensor (sqrt of exp_avg_sq, then its scaled copy).
    tensors = [_numel(t) for t in trainable_shapes(sh)]
    moments.append(Moment(embed_saved_bytes(sh), sum(tensors) * e, 2 * max(tensors) * e))
    return moments


def infer_moments(sh: Shape, head_positions: int | None = None) -> list[Moment]:
    """Candidate peaks of one forward under inference mode: nothing is saved, so only what a block's
    forward holds at once (its input, the LayerNorm output, q/k/v, two score-sized tensors) and the
    head's logits and fp32 log-probs."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, f = b * s * c.d_model, b * s * c.d_ff
    ea, ec = sh.param_bytes, sh.compute_bytes
    batch = embed_saved_bytes(sh)
    attn = 2 * b * c.n_heads * s * s * ec + s * s if c.attention == "explicit" else n * ec
    if c.family != "builtin" and c.attention == "explicit":
        attn += 4 * b * s * s - s * s  # transformers' eager causal mask: (B, 1, T, T) float, not bool
    ln_in = n * ea + (n * ec if sh.autocast else 0)
    block = n * ea + ln_in + (_qkvo_saved(sh) - b * s * c.q_dim) * ec + attn  # q, k, v (GQA repeats)
    # MLP tensors alive at once: GELU/ReLU input and output; SwiGLU's SiLU, up and their product; GPT-2's
    # Python tanh GELU its input, 0.5x and two of its chain's intermediates.
    mlp = n * ea + ln_in + f * ec * {"swiglu": 3, "gelu_new": 4}.get(c.mlp, 2)
    if c.family != "builtin":
        mlp += _hf_layer_held_bytes(sh)
    bsv = b * (head_positions or s) * c.vocab_size  # a generate prefill's head: the last position only
    head = n * ea + bsv * ec + bsv * 4 + (bsv * 4 if sh.autocast else 0)
    return [Moment(batch + max(block, mlp, head), 0, 0)]


def _hf_layer_held_bytes(sh: Shape) -> int:
    """What a transformers decoder keeps alive while a layer's MLP runs, beyond the layer's own input and
    norm output: the model's `inputs_embeds` (a local of the model's forward for the whole loop), the
    layer's residual (input + attention output), the causal mask (B, 1, T, T) float when attention is
    eager, and the eager attention weights (B, H, T, T), which the layer receives as `_` /
    `self_attn_weights` and drops only when it returns. Found by tracing live storages at the peak of a
    Llama and a GPT-2 inference step (harness's builtin blocks free all of these)."""
    c, b, s = sh.cfg, sh.batch, sh.seq
    n, ea, ec = b * s * c.d_model, sh.param_bytes, sh.compute_bytes
    held = 2 * n * ea  # inputs_embeds and the residual
    if c.attention == "explicit":
        held += 4 * b * s * s + b * c.n_heads * s * s * ec  # the float mask, the attention weights
    return held


def predict(case: CaseSpec) -> dict[str, Any]:
    """Predicted bytes per category at the step's peak, or `prediction_unavailable_reason`.

    Keys: parameters_bytes, optimizer_state_bytes, and at the predicted peak activations_bytes
    (saved for backward), gradients_bytes, temporaries_bytes, plus tensor_peak_bytes (their sum) and
    saved_activations_bytes (everything the forward keeps, at the start of backward).
    """
    shape = shape_for(case)
    if isinstance(shape, str):
        return {"prediction_unavailable_reason": shape}
    if case.workload_kind == "generate":
        return generate_prediction(case, shape)
    if case.workload_kind not in ("train", "infer"):
        return {"prediction_unavailable_reason": f"no formula for workload kind {case.workload_kind!r}"}
    if shape.kv_heads is not None and case.workload_kind == "train":
        return {
            "prediction_unavailable_reason": "grouped K/V heads' smaller training activations: no formula"
        }
    params = sum(_numel(t) for t in model_shapes(shape)) * shape.param_bytes - gqa_saved_params_bytes(shape)
    train = case.workload_kind == "train"
    optimizer = optimizer_state_bytes(shape) if train else 0
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


# ---- generation: the KV cache ------------------------------------------------------------------------


def gqa_saved_params_bytes(sh: Shape) -> int:
    """K and V projections pooled from n_heads to kv_heads heads: rows (and biases) removed."""
    if sh.kv_heads is None:
        return 0
    c = sh.cfg
    removed_rows = ((getattr(c, "n_kv_heads", None) or c.n_heads) - sh.kv_heads) * c.head_dim
    per_proj = removed_rows * (c.d_model + (1 if c.bias else 0))
    return 2 * per_proj * sh.unique_blocks * sh.param_bytes


def kv_cache_bytes(sh: Shape, tokens: int) -> int:
    """2 x layers x kv_heads x head_dim x tokens x batch x bytes per element, where tokens is what the
    cache keeps (the window, if any) and bytes per element is the dtype's, or bits/8 plus one scale of
    the dtype per group (harness.models.kv_cache stores exactly this)."""
    c = sh.cfg
    kv_heads = sh.kv_heads or getattr(c, "n_kv_heads", None) or c.n_heads  # a source's own GQA counts
    kept = min(tokens, sh.kv_window) if sh.kv_window else tokens
    elements = 2 * c.n_layers * kv_heads * c.head_dim * kept * sh.batch
    if sh.kv_bits is None:
        return elements * sh.compute_bytes
    group = sh.kv_group or c.head_dim
    return elements * sh.kv_bits // 8 + elements // group * sh.compute_bytes


def generate_prediction(case: CaseSpec, sh: Shape) -> dict[str, Any]:
    """Parameters, the KV cache once full (prompt + new tokens - 1 enter it), and the larger transient of
    the prefill (one inference forward over the prompt, logits of the last position only) or of the
    last decode step (a dynamic cache's concatenation holds one layer's old and new K/V at once)."""
    new = int(case.workload.get("new_tokens", 0))
    prompt = case.seq_len - new
    kv = kv_cache_bytes(sh, prompt + new - 1)
    params = sum(_numel(t) for t in model_shapes(sh)) * sh.param_bytes - gqa_saved_params_bytes(sh)
    prefill_shape = Shape(sh.cfg, sh.batch, prompt, sh.param_bytes, sh.compute_bytes)
    c = sh.cfg
    # The head runs on the last position only. (Subtracting a whole-prompt head from the largest moment
    # undercounted every prefill whose largest moment is a block: 1.17 measured/predicted on the built-in.)
    prefill = infer_moments(prefill_shape, head_positions=1)[0].activations
    static = sh.kv_static or case.workload.get("cache") == "static"
    prefill_kv = kv if static else kv_cache_bytes(sh, prompt)
    decode = kv if static else kv + kv // max(c.n_layers, 1)
    temporaries = max(prefill + prefill_kv, decode) - kv
    return {
        "parameters_bytes": params,
        "optimizer_state_bytes": 0,
        "kv_cache_bytes": kv,
        "activations_bytes": kv,
        "gradients_bytes": 0,
        "temporaries_bytes": max(temporaries, 0),
        "tensor_peak_bytes": params + kv + max(temporaries, 0),
    }
