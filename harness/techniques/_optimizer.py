"""Shared base of the optimizer techniques: one optimizer per case, chosen in the OPTIMIZER phase.

Not a technique itself (the registry skips modules whose names start with "_").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from harness.techniques.base import Phase, Technique, TechniqueConfig

ONE_OPTIMIZER = "a case has one optimizer; list one optimizer technique per combination"


class _OtherOptimizers(Mapping[str, str]):
    """`conflicts` of every optimizer technique: all the others, found in the registry when asked.

    Computed rather than listed so that adding an optimizer technique edits no other file.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def _names(self) -> list[str]:
        return sorted(
            n
            for n, cls in Technique.registry.items()
            if issubclass(cls, OptimizerTechnique) and n != self.owner
        )

    def __getitem__(self, name: str) -> str:
        if name not in self._names():
            raise KeyError(name)
        return ONE_OPTIMIZER

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


# How torch.optim runs the update: one tensor at a time (for_loop), grouped multi-tensor kernels
# (foreach: fewer launches, temporaries the size of a whole group), one fused kernel (fused), or whatever
# torch picks for the parameters' device when neither flag is given (default).
Implementation = Literal["default", "for_loop", "foreach", "fused"]


# The memory model's optimizer step holds one tensor's temporaries at a time (the CPU default).
FOR_LOOP_ONLY = "only the for-loop update's temporaries are modelled (foreach/fused hold a group's at once)"


def implementation_kwargs(implementation: Implementation) -> dict[str, Any]:
    """The torch.optim keyword arguments that select `implementation`; none for torch's own default."""
    return {
        "default": {},
        "for_loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[implementation]


def chosen_implementation(optimizer: Any, device: str) -> dict[str, str]:
    """What a torch.optim optimizer will run, and why: the record states it, so the baseline is known to be
    what users run (torch's default for the device) or says what was chosen instead."""
    foreach, fused = optimizer.defaults.get("foreach"), optimizer.defaults.get("fused")
    if fused:
        return {"optimizer_implementation": "fused", "optimizer_implementation_reason": "chosen in the suite"}
    if foreach is not None:
        name = "foreach" if foreach else "for_loop"
        return {"optimizer_implementation": name, "optimizer_implementation_reason": "chosen in the suite"}
    # torch.optim's rule (_default_to_fused_or_foreach): foreach when every parameter is on a device with
    # foreach kernels (CUDA), else one tensor at a time.
    name = "foreach" if device == "cuda" else "for_loop"
    return {
        "optimizer_implementation": name,
        "optimizer_implementation_reason": f"torch's default for {device} parameters (foreach, fused unset)",
    }


class OptimizerConfig(TechniqueConfig):
    lr: float = Field(default=1e-3, gt=0)
    """Learning rate (the baseline's AdamW uses 1e-3)."""


class OptimizerTechnique(Technique):
    """Base of techniques that replace the default AdamW; subclasses implement `build_optimizer`."""

    phase: ClassVar[Phase] = Phase.OPTIMIZER
    # An optimizer only matters where parameters are updated.
    needs_training: ClassVar[bool | None] = True
    # Whether it steps DTensor shards (FSDP2's parameters) as it steps whole tensors: torch.optim's
    # elementwise optimizers do; bitsandbytes/torchao kernels and Adafactor's factored (row/column)
    # statistics do not expect a parameter split along dim 0.
    steps_dtensor_shards: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.conflicts = _OtherOptimizers(cls.name)
