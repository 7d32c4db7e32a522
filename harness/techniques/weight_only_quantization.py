from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

from harness.techniques import _util
from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn


INSTALL = {
    "bitsandbytes": "needs package bitsandbytes (pip install torch==<your torch> bitsandbytes==0.50.2)",
    "torchao": "needs package torchao (pip install torch==<your torch> torchao==0.18.0)",
}
SCHEMES = {"bitsandbytes": ("int8", "nf4", "fp4"), "torchao": ("int8", "int4")}


class WeightOnlyQuantization(Technique):
    """Weights stored quantized, dequantized inside each matmul (LLM.int8(), QLoRA's NF4; torchao).

    Saves: the targeted Linear weights go from 4 (fp32) / 2 (bf16) bytes per element to 1 (int8, plus
    one fp32 scale per row) or 1/2 (nf4 / fp4 / int4, plus one absmax per `blocksize` elements).
    Costs: quantization error; a dequantize per call (torchao int8 dequantizes the whole weight per
    call, so the forward's transient peak rises by one weight); bitsandbytes' CPU backend is slow.
    bitsandbytes on CPU (0.50.2): the first inference forward repacks a 4-bit weight for its CPU
    kernel, with the absmax in bf16 and double quantization undone, so `double_quant` saves nothing
    there; int8 casts bf16 inputs to fp16 on every call (and says so).
    Schemes: bitsandbytes int8 (Linear8bitLt, threshold 0: weight-only, no fp16 outlier path), nf4 and
    fp4 (Linear4bit); torchao int8 (Int8WeightOnlyConfig) and int4 (Int4WeightOnlyConfig, tinygemm
    packing: CUDA and bfloat16 only).
    Workloads: inference; in training only frozen weights (under an adapter such as LoRA, as QLoRA
    does) are quantized: a quantized weight has no gradient.
    """

    name: ClassVar[str] = "weight_only_quantization"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    quantizes: ClassVar[bool] = True
    conflicts: ClassVar[dict[str, str]] = {
        "fp8_training": "fp8_training swaps every nn.Linear; the quantized layers are nn.Linear subclasses",
    }

    class Config(TechniqueConfig):
        backend: Literal["bitsandbytes", "torchao"] = "bitsandbytes"
        """The library that stores and multiplies the quantized weights."""
        scheme: Literal["int8", "nf4", "fp4", "int4"] = "int8"
        """Weight format: bitsandbytes offers int8, nf4, fp4; torchao offers int8, int4."""
        blocksize: Literal[32, 64, 128, 256] = 64
        """Elements per absmax scale for 4-bit formats (bitsandbytes blocksize, torchao group_size)."""
        double_quant: bool = False
        """bitsandbytes 4-bit: quantize the absmax scales too (QLoRA's ~0.37 bit/param; not on CPU)."""
        include_lm_head: bool = True
        """Also quantize the (untied) LM head."""

        @model_validator(mode="after")
        def _scheme_of_backend(self) -> WeightOnlyQuantization.Config:
            if self.scheme not in SCHEMES[self.backend]:
                raise ValueError(
                    f"{self.backend} offers schemes {', '.join(SCHEMES[self.backend])}, not {self.scheme}"
                )
            return self

    config: Config

    def preload(self) -> None:
        # bitsandbytes / torchao import hundreds of modules: not the model's memory.
        importlib.import_module(self.config.backend)

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if not env.has_module(self.config.backend):
            return INSTALL[self.config.backend]
        if self.config.backend == "torchao" and self.config.scheme == "int4":
            if ctx.device != "cuda":
                return (
                    "torchao int4 weight-only (tinygemm packing) needs CUDA kernels; "
                    "on CPU use scheme int8, or backend bitsandbytes with nf4"
                )
            if ctx.dtype != "bfloat16":
                return "torchao int4 weight-only (tinygemm) takes bfloat16 weights; set dtype: bfloat16"
        return None

    def combination_reason(self, others: list[Technique], ctx: Context) -> str | None:
        if ctx.workload in _INFERENCE or any(o.freezes_base for o in others):
            return None
        adapters = sorted(n for n, cls in Technique.registry.items() if cls.freezes_base)
        return (
            f"in a {ctx.workload} workload it quantizes frozen weights only: combine it with an adapter "
            f"({', '.join(adapters)}) that freezes the base, as QLoRA does"
        )

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        from torch import nn

        targets = [
            (n, m)
            for n, m in _util.target_linears(model, self.config.include_lm_head)
            if ctx.workload in _INFERENCE or not m.get_parameter("weight").requires_grad
        ]
        if not targets:
            self._no_frozen_weights(ctx)
        if self.config.backend == "bitsandbytes" and self.config.scheme != "int8" and ctx.device == "cpu":
            # bitsandbytes' CPU 4-bit kernel repacks the absmax as (rows, in_features // blocksize), and
            # its inference path (AVX512-BF16 CPUs) packs rows in blocks of 32: a layer whose input width
            # is not a multiple of the block, or whose output width is not of 32 (a 300-token head), fails
            # there, so it stays in full precision on every CPU alike (`metrics` counts and names it).
            targets = [(n, m) for n, m in targets if _bnb_cpu_4bit_ok(m, self.config.blocksize)]
        if self.config.backend == "torchao":
            _torchao(model, targets, self.config)
        else:
            for name, module in targets:
                assert isinstance(module, nn.Linear)
                _util.set_submodule(model, name, _bnb_linear(module, self.config, ctx.device))
        return model

    @staticmethod
    def _no_frozen_weights(ctx: Context) -> None:
        raise ValueError(
            f"weight_only_quantization in a {ctx.workload} workload quantizes frozen Linear weights "
            "only, and there are none: add an adapter technique (lora) that freezes the base"
        )

    def metrics(self, model: nn.Module) -> dict[str, Any]:
        layers = [m for m in model.modules() if _util.is_quantized_linear(m)]
        targets = _util.target_linears(model, self.config.include_lm_head)
        out: dict[str, Any] = {
            "quantized_layer_count": len(layers),
            "unquantized_layer_count": len(targets),
            "weight_storage_bytes": sum(_weight_bytes(m) for m in layers),
            "dense_weight_bytes": _util.dense_weight_bytes(layers, model),
        }
        notes = []
        if targets:  # a partial quantization must not read as the technique's whole effect
            names = ", ".join(n for n, _ in targets[:4]) + (", ..." if len(targets) > 4 else "")
            total = len(targets) + len(layers)
            notes.append(f"{len(targets)} of {total} targeted layers kept in full precision ({names})")
        head = getattr(model, "lm_head", None)
        if self.config.backend == "torchao" and head is not None and _util.is_quantized_linear(head):
            # Measured 1.09x the baseline's tensor peak on a 50k-vocab head: the dequantized copy is live
            # during the head's matmul, a transient the stored bytes do not show.
            notes.append(
                "torchao dequantizes the head's weight on every call, a full-width transient in the peak; "
                "include_lm_head: false avoids it"
            )
        if notes:
            out["technique_note"] = "weight_only_quantization: " + "; ".join(notes)
        return out


# Workloads without gradients: every targeted weight may be quantized.
_INFERENCE = frozenset({"infer", "generate"})


def _bnb_linear(linear: nn.Linear, cfg: WeightOnlyQuantization.Config, device: str) -> nn.Module:
    """A bitsandbytes layer holding `linear`'s weight; bitsandbytes quantizes it on `.to(device)`."""
    import bitsandbytes as bnb
    from torch import nn

    w, b = linear.weight.detach(), linear.bias
    new: nn.Module
    if cfg.scheme == "int8":
        # threshold 0: no outlier decomposition, i.e. plain vector-wise int8 weights (LLM.int8() without
        # its fp16 outlier columns, which are an activation-side feature).
        new = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=b is not None,
            has_fp16_weights=False,
            threshold=0.0,
            device="meta",
        )
        new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
    else:
        new = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=b is not None,
            compute_dtype=w.dtype,
            quant_type=cfg.scheme,
            compress_statistics=cfg.double_quant,
            device="meta",
        )
        new.weight = bnb.nn.Params4bit(
            w,
            requires_grad=False,
            quant_type=cfg.scheme,
            blocksize=cfg.blocksize,
            compress_statistics=cfg.double_quant,
        )
    if b is not None:
        new.bias = nn.Parameter(b.detach(), requires_grad=b.requires_grad)
    return new.to(device)


def _torchao(
    model: nn.Module, targets: list[tuple[str, nn.Module]], cfg: WeightOnlyQuantization.Config
) -> None:
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    chosen = {id(m) for _, m in targets}
    config: Any = (
        Int8WeightOnlyConfig()
        if cfg.scheme == "int8"
        else Int4WeightOnlyConfig(group_size=cfg.blocksize, int4_packing_format="tile_packed_to_4d")
    )
    quantize_(model, config, filter_fn=lambda m, _fqn: id(m) in chosen)


def _bnb_cpu_4bit_ok(m: nn.Module, blocksize: int) -> bool:
    from torch import nn

    assert isinstance(m, nn.Linear)
    return int(m.in_features) % blocksize == 0 and int(m.out_features) % 32 == 0


def _weight_bytes(m: nn.Module) -> int:
    """Quantized data plus scales: bitsandbytes keeps int8 data + SCB (per-row fp32 absmax), or packed
    4-bit data + a QuantState (absmax per block, code table, nested state when double-quantized)."""
    import torch

    w = _util.attr_tensor(m, "weight")
    total = _util.tensor_bytes(w)
    # Linear8bitLt moves the per-row scales from weight.SCB to its MatmulLtState on the first forward.
    scb = getattr(w, "SCB", None)
    if scb is None:
        scb = getattr(getattr(m, "state", None), "SCB", None)
    if isinstance(scb, torch.Tensor):
        total += _util.tensor_bytes(scb)
    state = getattr(w, "quant_state", None)
    if state is not None:
        total += _quant_state_bytes(state)
    return total


def _quant_state_bytes(state: Any) -> int:
    import torch

    total = 0
    for value in (state.absmax, state.code, getattr(state, "offset", None)):
        if isinstance(value, torch.Tensor):
            total += _util.tensor_bytes(value)
    nested = getattr(state, "state2", None)
    return total + (_quant_state_bytes(nested) if nested is not None else 0)
