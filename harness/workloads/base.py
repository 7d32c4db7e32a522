"""The workload interface: what one measured step does (train, infer, distill, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from harness.techniques.base import Context, Phase, Technique

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.case import CaseSpec
    from harness.models.source import ModelSource


class WorkloadConfig(BaseModel):
    """Options of a workload entry in a suite; `kind` selects the workload class."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)

    kind: str
    """The workload kind: train, infer, ..."""
    batch_size: int = Field(default=8, ge=1)
    """Sequences per step."""
    seq_len: int = Field(default=128, ge=2)
    """Tokens per sequence."""


class Session(ABC):
    """A built workload inside the case process: the model and a `step()` that runs one step."""

    model: nn.Module
    samples_per_step: int
    tokens_per_step: int
    techniques: list[Technique]  # set by runner.session.open_session: the instances that built the model

    @abstractmethod
    def step(self, i: int) -> float:
        """Run step `i` (0-based over warm-up + measured steps) and return its loss."""

    def extra_metrics(self) -> dict[str, Any]:
        return {}

    @property
    def serving(self) -> bool:
        """Whether the session serves a built model (inference, generation) rather than training one:
        its memory headline is then the measured phase's steady state, and the build phase (where a
        technique's input and output copies coexist) is reported apart. Default: nothing is trained,
        i.e. the session has no optimizer."""
        return getattr(self, "optimizer", None) is None


class Workload(ABC):
    name: ClassVar[str]
    # Whether its step computes gradients and updates parameters: techniques decide by this trait
    # (Technique.needs_training), not by lists of workload kinds.
    trains: ClassVar[bool] = True
    Config: ClassVar[type[WorkloadConfig]] = WorkloadConfig
    registry: ClassVar[dict[str, type[Workload]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Workload.registry[cls.name] = cls

    def __init__(self, config: WorkloadConfig) -> None:
        self.config = config

    def case_reason(self, case: CaseSpec) -> str | None:
        """Why this workload cannot run `case` (its model and its options disagree), decided in the
        parent before a process is spent; the case becomes `unsupported` with it. Default: None."""
        return None

    def prepare(self, case: CaseSpec) -> None:
        """Fill caches the case process will only load (trained weights), in the parent before the case
        process starts, so that work is no part of the case's time or memory. Default: nothing."""
        return None

    @abstractmethod
    def setup(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> Session:
        """Build the model, data for `n_steps` steps and whatever the step needs."""


def build_model(
    cfg: ModelSource,
    techniques: list[Technique],
    ctx: Context,
    weights: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Config rewrites, build (and load `weights`), cast and move, then module rewrites and wrappers,
    in declared order: techniques that rewrite modules see the trained weights."""
    import torch

    from harness.models.build import build_module, with_weights

    for t in techniques:
        if t.phase == Phase.CONFIG:
            cfg = t.configure_model(cfg, ctx)
    torch.manual_seed(ctx.seed)  # same initial weights for every technique of a model
    model = build_module(cfg) if weights is None else with_weights(cfg, weights)
    model = model.to(device=ctx.device, dtype=getattr(torch, ctx.dtype))
    for t in techniques:
        if t.phase > Phase.CONFIG:
            model = t.transform_model(model, ctx)
    return model


def build_optimizer(model: nn.Module, techniques: list[Technique], ctx: Context) -> torch.optim.Optimizer:
    """The first technique that offers an optimizer wins (conflicts keep it unique); else AdamW."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    for t in techniques:
        opt = t.build_optimizer(params, ctx)
        if opt is not None:
            return opt
    # torch's own foreach/fused default for the device, as users run it (for_loop on CPU, foreach on CUDA);
    # the record states which (`optimizer_implementation`), and `adamw: {implementation: ...}` picks another.
    return torch.optim.AdamW(params, lr=1e-3)
