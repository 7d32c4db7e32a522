from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar, Literal

from harness.techniques import _util
from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    from torch import nn


class DynamicInt8(Technique):
    """Dynamic int8 quantization of the Linear layers for inference (torch.ao `quantize_dynamic`).

    Saves: the targeted weights go from 4 (fp32) to 1 byte per element, plus a scale and zero point per
    tensor or per output row; activations are quantized on the fly per call and stay fp32 between layers.
    Costs: quantization error; int8 GEMMs through fbgemm (x86) or qnnpack (ARM) CPU kernels only.
    `torch.ao.quantization` is deprecated in favour of torchao and warns so on every call; it still
    works in torch 2.13. Weight bytes in `metrics` are the logical int8 data + scales; fbgemm's packed
    copy adds one int32 column offset per output row.
    """

    name: ClassVar[str] = "dynamic_int8"
    phase: ClassVar[Phase] = Phase.STRUCTURE
    quantizes: ClassVar[bool] = True
    needs_training: ClassVar[bool | None] = False
    conflicts: ClassVar[dict[str, str]] = {
        "pure_bf16": "torch.ao's dynamic int8 Linear takes fp32 activations; pure_bf16 feeds it bfloat16",
    }

    class Config(TechniqueConfig):
        granularity: Literal["per_tensor", "per_channel"] = "per_tensor"
        """One weight scale per tensor (torch's default dynamic qconfig) or one per output row."""
        include_lm_head: bool = True
        """Also quantize the (untied) LM head."""

    config: Config

    def preload(self) -> None:
        # Its modules (and their deprecation warning) load before the memory base, not with the model.
        importlib.import_module("torch.ao.quantization")

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if ctx.device != "cpu":
            return "torch.ao dynamic int8 quantization has CPU kernels only (fbgemm / qnnpack)"
        if ctx.dtype != "float32":
            return f"torch.ao dynamic quantization takes an fp32 model; this case's weights are {ctx.dtype}"
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch
        from torch.ao import quantization as tq

        qconfig = (
            tq.per_channel_dynamic_qconfig
            if self.config.granularity == "per_channel"
            else tq.default_dynamic_qconfig
        )
        names = [name for name, _ in _util.target_linears(model, self.config.include_lm_head)]
        with torch.no_grad():
            out: nn.Module = tq.quantize_dynamic(
                model, dict.fromkeys(names, qconfig), dtype=torch.qint8, inplace=True
            )
        return out

    def metrics(self, model: nn.Module) -> dict[str, float | int]:
        layers = quantized_linears(model)
        return {
            "quantized_layer_count": len(layers),
            "weight_storage_bytes": sum(_util.tensor_bytes(m.weight()) for m in layers),
            "dense_weight_bytes": _util.dense_weight_bytes(layers, model),
        }


def quantized_linears(model: nn.Module) -> list[nn.Module]:
    from torch.ao.nn.quantized import dynamic as nnqd

    return [m for m in model.modules() if isinstance(m, nnqd.Linear)]
