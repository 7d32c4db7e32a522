"""The one interface every memory-saving technique implements, and the order they compose in.

Composition order (torchtitan's habit: state it once, in one place):

1. CONFIG     rewrite the ModelConfig before the model exists: SDPA attention, tied embeddings,
              cross-layer sharing. Cheapest place to act: nothing is built twice.
2. STRUCTURE  rewrite modules of the built model: pruning, then adapters/LoRA, then quantization.
              Pruning comes before adapters so adapters are not pruned; quantization comes last so it
              sees the final weights (QLoRA quantizes the frozen base under its adapters).
3. WRAP       wrap modules: activation checkpointing, then sharding (FSDP wraps what checkpointing
              already wrapped, as torchtitan's parallelize does).
4. OPTIMIZER  choose the optimizer over the trainable parameters only (frozen weights carry no state).
5. STEP       shape the training step: autocast, loss scaling, gradient accumulation, chunked loss.

Within a phase, the order is the one table in techniques/order.py. Hooks a technique does not override
are no-ops, so a technique acts only where it declares it does; its effect on the analytic prediction
and on the step's FLOPs are methods of the technique too (`adjust_prediction`, `adjust_flops`), so
analysis/predict.py and analysis/flops.py hold only the base formulas. Relations between techniques are
traits on the class (`freezes_base`, `quantizes`, ...), never lists of other techniques' names.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.analysis.shape import Shape, StepFlops
    from harness.models.source import ModelSource


QUANTIZERS_CONFLICT = "two weight quantizers: the second would quantize already-quantized weights"


class Phase(IntEnum):
    CONFIG = 0
    STRUCTURE = 1
    WRAP = 2
    OPTIMIZER = 3
    STEP = 4


class TechniqueConfig(BaseModel):
    """Options of one technique, as written under its name in a suite. Strict and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class Environment:
    """What the machine that runs the case offers; techniques decide from it whether they can run."""

    cuda_available: bool
    cuda_device_name: str | None = None
    cuda_capability: tuple[int, int] | None = None
    cpu_flags: frozenset[str] = frozenset()
    cuda_device_count: int = 0
    nccl_available: bool = False  # the torch build's NCCL backend (CUDA ranks)

    @staticmethod
    def has_module(name: str) -> bool:
        return importlib.util.find_spec(name) is not None


@dataclass(frozen=True)
class Context:
    """What a technique may read about the case it is applied to."""

    device: str  # "cpu" or "cuda"
    dtype: str  # parameter dtype: "float32" or "bfloat16"
    workload: str  # workload kind: "train", "infer", "distill", ...
    batch_size: int
    seq_len: int
    seed: int
    rank: int = 0
    world_size: int = 1
    # Which model source the case builds (harness.models.source): "builtin", "hf" or "factory", and its
    # family ("builtin", "factory", or transformers' gpt2/llama/mistral/qwen2). Techniques that need a
    # part a source lacks say so in `unsupported_reason`, before a process is spent.
    model_source: str = "builtin"
    model_family: str = "builtin"
    model_kv_heads: int | None = None  # key/value heads per layer (None: a factory module, unknown)


LossFn = Callable[["nn.Module", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass
class StepPlan:
    """How one training step is run; STEP-phase techniques edit it.

    `loss_fn(model, inputs, targets)` returns the mean next-token loss of a micro-batch.
    """

    loss_fn: LossFn
    micro_batches: int = 1
    contexts: list[Callable[[], contextlib.AbstractContextManager[Any]]] = field(default_factory=list)
    # fp16 autocast needs loss scaling; a technique that sets this owns the scaler's use.
    grad_scaler: Any = None

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for make in self.contexts:
                stack.enter_context(make())
            yield


class Technique:
    """A memory-saving technique: one subclass per file under harness/techniques/.

    Subclasses set `name` (the YAML key), `phase`, a docstring saying what it saves and costs, and
    optionally `conflicts` (other name -> reason), `workloads` (kinds it applies to), traits and a
    nested `Config(TechniqueConfig)`. Defining the subclass registers it. Its place within its phase is
    techniques/order.py's table (a technique not listed there runs after the listed ones, by name).
    """

    name: ClassVar[str]
    phase: ClassVar[Phase]
    conflicts: ClassVar[Mapping[str, str]] = {}
    # Traits other techniques decide by, instead of lists of names:
    # freezes_base: only tensors it adds train (LoRA, adapters); a quantizer may then quantize the base.
    freezes_base: ClassVar[bool] = False
    # quantizes: replaces or re-parametrizes the Linear layers' weights with quantized ones; two
    # quantizers cannot stack (the second would quantize already-quantized weights).
    quantizes: ClassVar[bool] = False
    # Workload kinds this technique means something for; None means all. Prefer the trait below: a kind
    # list must be edited for every new workload, a trait is the workload's own (Workload.trains).
    workloads: ClassVar[frozenset[str] | None] = None
    # needs_training: True acts on gradients or the optimizer (workloads that train); False acts only
    # where nothing trains (inference); None: either.
    needs_training: ClassVar[bool | None] = None
    # True when the technique must not change the math: its case's losses are checked against the
    # baseline's, and a relative drift above `exact_rtol` is flagged in the result.
    exact: ClassVar[bool] = False
    exact_rtol: ClassVar[float] = 1e-5

    class Config(TechniqueConfig):
        pass

    registry: ClassVar[dict[str, type[Technique]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "order" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} sets `order`: the composition order is the one table in "
                "harness/techniques/order.py"
            )
        if "name" in cls.__dict__:
            if cls.name in Technique.registry:
                raise TypeError(f"technique {cls.name!r} is registered twice")
            Technique.registry[cls.name] = cls

    def __init__(self, config: TechniqueConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    # ---- decided in the parent, before a process is spent on the case ----
    def workload_reason(self, kind: str, trains: bool) -> str | None:
        """Why this technique means nothing for a workload of `kind` (which trains or not), or None."""
        if self.workloads is not None and kind not in self.workloads:
            return f"{self.name} applies to {', '.join(sorted(self.workloads))} workloads, not {kind}"
        if self.needs_training is not None and self.needs_training != trains:
            needs = "a workload that trains" if self.needs_training else "a workload that does not train"
            return f"{self.name} applies to {needs}; {kind} {'trains' if trains else 'does not train'}"
        return None

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        """Why this technique cannot run here (needs CUDA, a package, ...), or None."""
        return None

    def combination_reason(self, others: list[Technique], ctx: Context) -> str | None:
        """Why this technique cannot run beside `others` in this case (it needs a partner, say), or None.
        Decided in the parent like `unsupported_reason`; the case becomes `unsupported` with the reason."""
        return None

    def conflicts_with(self, other: Technique) -> str | None:
        """Why this technique, as configured, cannot be combined with `other`, or None. The default reads
        the class-level `conflicts` and the traits; override it where the answer depends on the options
        (e.g. unstructured_pruning conflicts with quantizers only with storage masks or sparse)."""
        if self.quantizes and other.quantizes:
            return QUANTIZERS_CONFLICT
        return self.conflicts.get(other.name)

    # ---- the analytic models, decided in the parent from the technique's own config ----
    def adjust_prediction(self, shape: Shape) -> str | None:
        """Edit the memory model's inputs (analysis/shape.py) to this technique's effect, or return why
        its effect cannot be derived. The default says there is no rule: the prediction is then null with
        that reason (it never guesses)."""
        return f"no prediction rule: {type(self).__name__} does not implement adjust_prediction"

    def adjust_flops(self, flops: StepFlops, shape: Shape) -> str | None:
        """Edit the step's FLOPs (work recomputed, the dtype matmuls run in), or return why they cannot be
        derived. The default: the technique leaves the arithmetic of the dense model as it is."""
        return None

    # ---- hooks, called in composition order; defaults do nothing ----
    def configure_model(self, cfg: ModelSource, ctx: Context) -> ModelSource:
        """Rewrite the config before the model exists. `cfg.replace(...)` takes harness's field names on
        every source that has them (tie_embeddings, attention; see harness.models.source)."""
        return cfg

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model

    def build_optimizer(self, params: list[torch.nn.Parameter], ctx: Context) -> torch.optim.Optimizer | None:
        """Return an optimizer to replace the default AdamW, or None to leave the choice to others."""
        return None

    def plan_step(self, plan: StepPlan, ctx: Context) -> None:
        return None

    def launch_ranks(self, ctx: Context) -> int:
        """How many ranks the case needs (ZeRO/FSDP); 1 runs in the case process itself."""
        return 1

    def preload(self) -> None:
        """Import heavy optional packages (peft, bitsandbytes, ...) here: the case process calls it before
        it takes the memory base, so their import does not count as the model's memory."""
        return None

    def metrics(self, model: nn.Module) -> dict[str, Any]:
        """Figures only this technique can state (sparsity reached, weight storage bytes, ...), measured on
        the built model after the measured steps; keys carry units."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json")}
