"""FLOPs of a step, achieved FLOP/s and model FLOPs utilisation (MFU).

Per token, training costs about 6N + 12*L*h*s FLOPs and a forward 2N + 4*L*h*s (Chowdhery et al.
2022, PaLM, appendix B; nanoGPT's `estimate_mfu`): N non-embedding parameters (each weight is one
multiply-add forward, two backward), and the attention products QK^T and PV (2*s*h each per token
and layer forward; causal masking is not subtracted, as PaLM does not). Embedding lookups are no
matmul and are left out; our untied LM head is a matmul and is counted in N.

`torch.utils.flop_counter.FlopCounterMode` counts matrix products only (mm/addmm/bmm, 2*m*n*k), so it
sees the weights of the linear layers but not their biases, LayerNorm parameters or element-wise
ops: `matmul_flops_per_step` is that count, derived exactly; the 6N figure is above it by 6 FLOPs per
token for each bias and LayerNorm parameter (about 1 % on the ci model).
"""

from __future__ import annotations

from typing import Any

from harness import techniques as techreg
from harness.analysis.predict import base_shape
from harness.analysis.shape import BlockFlops, StepFlops
from harness.case import CaseSpec
from harness.models.source import ModelSpec

# Dense (no sparsity) peak FLOP/s by GPU and compute dtype, from the vendor datasheets.
# Order matters: the first key contained in torch.cuda.get_device_name() + " " wins (PCIe before SXM;
# a trailing space keeps "L4 " from matching an L40S and "A10 " from matching an A10G).
GPU_PEAKS: list[tuple[str, dict[str, float]]] = [
    # NVIDIA H100 datasheet (PCIe): BF16 756 TFLOPS (1,513 with sparsity), FP32 51 TFLOPS.
    ("H100 PCIe", {"bfloat16": 756e12, "float16": 756e12, "float32": 51.2e12}),
    # NVIDIA H100 datasheet (SXM): BF16 989 TFLOPS dense (1,979 with sparsity), FP32 67 TFLOPS.
    ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    # NVIDIA H200 datasheet (SXM): the H100 SXM's compute, BF16 989 dense, FP32 67.
    ("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    # NVIDIA A100 datasheet: BF16/FP16 312 TFLOPS, FP32 19.5 (TF32 156, only with allow_tf32).
    ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}),
    # NVIDIA L4 datasheet: BF16 121 TFLOPS dense (242 with sparsity), FP32 30.3.
    ("L4 ", {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12}),
    # NVIDIA A10 datasheet: BF16 125 TFLOPS dense (250 with sparsity), FP32 31.2. (A10G, AWS's
    # variant, is not listed: its vendor figures differ and were not verified.)
    ("A10 ", {"bfloat16": 125e12, "float16": 125e12, "float32": 31.2e12}),
    # NVIDIA V100 datasheet (SXM2): FP16 tensor 125 TFLOPS, FP32 15.7; no bf16 units.
    ("V100", {"float16": 125e12, "float32": 15.7e12}),
    # NVIDIA T4 datasheet: FP16 tensor 65 TFLOPS, FP32 8.1; no bf16 units.
    ("T4 ", {"float16": 65e12, "float32": 8.1e12}),
]


def non_embedding_params(cfg: ModelSpec) -> int:
    """Parameters that take part in a matmul or normalisation per token (embeddings excluded)."""
    embed = cfg.vocab_size * cfg.d_model + (
        cfg.max_seq_len * cfg.d_model if cfg.pos_encoding == "learned" else 0
    )
    # A tied head is the embedding matrix used as a matmul: it counts once, as the head.
    return cfg.param_count() - embed + (cfg.vocab_size * cfg.d_model if cfg.tie_embeddings else 0)


def matmul_weight_params(cfg: ModelSpec) -> int:
    """Weights of the linear layers only: what FlopCounterMode sees (GQA-wide K/V, SwiGLU's three)."""
    return cfg.n_layers * (_attn_weights(cfg) + _mlp_weights(cfg)) + cfg.vocab_size * cfg.d_model


def _attn_weights(cfg: ModelSpec) -> int:
    return 2 * cfg.d_model * (cfg.q_dim + cfg.kv_dim)  # q and out, k and v


def _mlp_weights(cfg: ModelSpec) -> int:
    return (3 if cfg.mlp == "swiglu" else 2) * cfg.d_model * cfg.d_ff


def block_flops(cfg: ModelSpec, tokens: int, seq_len: int) -> BlockFlops:
    """Forward FLOPs of one block's matrix products over `tokens` tokens (2 per multiply-add): GQA-wide
    K/V, SwiGLU's gate and up counted in fc1."""
    d = cfg.d_model
    return BlockFlops(
        qkv=tokens * 2 * d * (cfg.q_dim + 2 * cfg.kv_dim),
        attention=tokens * 4 * cfg.q_dim * seq_len,  # QK^T and PV: 2*s*h each per token
        out_proj=tokens * 2 * cfg.q_dim * d,
        fc1=tokens * 2 * d * cfg.d_ff * (2 if cfg.mlp == "swiglu" else 1),
        fc2=tokens * 2 * d * cfg.d_ff,
    )


def step_flops(case: CaseSpec) -> StepFlops | str:
    """The step's FLOPs with every technique's own adjustment, or why there is no formula."""
    shape = base_shape(case)
    if isinstance(shape, str):
        return "a factory module's shapes are its own: no FLOP formula"
    cfg = shape.cfg
    tokens = case.batch_size * case.seq_len
    attn = 4 * cfg.n_layers * cfg.q_dim * case.seq_len  # forward QK^T and PV, per token
    passes = {"train": 3, "infer": 1}.get(case.workload_kind)
    if passes is None:
        return f"no FLOP formula for workload kind {case.workload_kind!r}"
    flops = StepFlops(
        model=tokens * passes * (2 * non_embedding_params(cfg) + attn),
        matmul=tokens * passes * (2 * matmul_weight_params(cfg) + attn),
        block=block_flops(cfg, tokens, case.seq_len),
        compute_dtype=case.dtype,
    )
    for tech in techreg.compose((t.name, t.config) for t in case.techniques):
        if reason := tech.adjust_flops(flops, shape):
            return f"{tech.name}: {reason}"
    return flops


def flops_per_step(case: CaseSpec) -> dict[str, Any]:
    """Analytic FLOPs of one step of `case` (the dense model as the suite defines it).

    `model_flops_per_step`: 6N + 12Lhs per token (train) or 2N + 4Lhs (infer), the MFU numerator.
    `hardware_flops_per_step`: adds the forward matmuls that techniques recompute (checkpointing).
    `matmul_flops_per_step`: the same work restricted to matrix products (FlopCounterMode's count).
    """
    flops = step_flops(case)
    if isinstance(flops, str):
        return {"flops_unavailable_reason": flops}
    return {
        "model_flops_per_step": flops.model,
        "hardware_flops_per_step": flops.model + flops.recomputed,
        "matmul_flops_per_step": flops.matmul,
    }


def compute_dtype(case: CaseSpec) -> str:
    """The dtype matmuls run in, as the case's techniques say (autocast's, pure bf16's), else the weights'."""
    flops = step_flops(case)
    return case.dtype if isinstance(flops, str) else flops.compute_dtype


def gpu_peak(device_name: str, dtype: str) -> tuple[float, str] | str:
    """(peak FLOP/s, table entry) for a GPU name, or why there is none."""
    for key, peaks in GPU_PEAKS:
        if key in device_name + " ":
            if dtype not in peaks:
                return f"{key} has no {dtype} matrix units in its datasheet"
            return peaks[dtype], key.strip()
    return f"no peak FLOP/s on record for GPU {device_name!r}"


def mfu(
    case: CaseSpec, step_time_s: float, peak_flop_per_s: float | None, peak_source: str
) -> dict[str, Any]:
    """Achieved FLOP/s of the median step and its fraction of the peak (`peak_source` names where the
    peak came from: `table:<gpu>` or `calibrated:cpu`)."""
    flops = flops_per_step(case)
    if "model_flops_per_step" not in flops or step_time_s <= 0:
        return {**flops, "mfu_unavailable_reason": flops.get("flops_unavailable_reason", "no step time")}
    achieved = flops["model_flops_per_step"] / step_time_s
    out: dict[str, Any] = {**flops, "achieved_flop_per_s": achieved}
    if peak_flop_per_s is None:
        out["mfu_unavailable_reason"] = peak_source
        return out
    fraction = achieved / peak_flop_per_s
    # The source names the dtype whose peak was used (the dtype the matmuls run in).
    out.update(mfu_peak_flop_per_s=peak_flop_per_s, mfu_peak_source=f"{peak_source}:{compute_dtype(case)}")
    if not 0 < fraction <= 1:
        # Above the peak is impossible: the peak (a calibration that missed the fast path, a table entry
        # for another dtype) or the FLOP count is wrong, so the figure is withheld, never printed.
        out["mfu_unavailable_reason"] = (
            f"MFU would be {fraction:.3g}, outside (0, 1]: achieved {achieved:.3g} FLOP/s against a peak "
            f"of {peak_flop_per_s:.3g} FLOP/s ({out['mfu_peak_source']}); the peak or the FLOP count is wrong"
        )
        return out
    out["mfu_fraction"] = fraction
    return out


def mfu_for_device(case: CaseSpec, step_time_s: float, device_name: str | None = None) -> dict[str, Any]:
    """MFU against the right peak: the GPU table on CUDA, a cached matmul calibration on CPU."""
    dtype = compute_dtype(case)
    if case.device == "cuda":
        found = gpu_peak(device_name or "", dtype)
        if isinstance(found, str):
            return mfu(case, step_time_s, None, found)
        return mfu(case, step_time_s, found[0], f"table:{found[1]}")
    from harness.analysis.calibrate import cpu_peak_flop_per_s

    flops = flops_per_step(case).get("model_flops_per_step")
    achieved = flops / step_time_s if flops and step_time_s > 0 else 0.0
    peak = cpu_peak_flop_per_s(dtype, case.threads, at_least=achieved)
    return mfu(case, step_time_s, peak, "calibrated:cpu")
