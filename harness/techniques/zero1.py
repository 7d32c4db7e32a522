"""ZeRO stage 1, and the base that every data-parallel (multi-rank) technique shares with FSDP2."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from harness.techniques._optimizer import OptimizerTechnique
from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn


OUTSIDE_FORWARD = (
    "its loss calls the model's parts outside forward(), past the hooks that synchronise or gather "
    "the sharded parameters"
)


class DataParallelConfig(TechniqueConfig):
    ranks: int = Field(default=2, ge=2)
    """Data-parallel ranks (processes) under torchrun; each takes batch_size / ranks samples a step."""


class Conflicts(Mapping[str, str]):
    """Fixed conflicts plus every optimizer technique whose traits `allows` refuses, looked up in the
    registry when asked (so a new optimizer technique is covered by its traits, editing no other file)."""

    def __init__(
        self,
        fixed: Mapping[str, str],
        optimizer_reason: str,
        allows: Callable[[type[OptimizerTechnique]], bool],
    ):
        self.fixed, self.optimizer_reason, self.allows = dict(fixed), optimizer_reason, allows

    def _all(self) -> dict[str, str]:
        out = dict(self.fixed)
        for name, cls in Technique.registry.items():
            if issubclass(cls, OptimizerTechnique) and not self.allows(cls):
                out[name] = self.optimizer_reason
        return out

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._all()))

    def __len__(self) -> int:
        return len(self._all())


class DataParallel(Technique):
    """Base of techniques that run a case on several ranks (no `name`: not a technique itself).

    The case process launches `ranks` processes under torchrun (harness/runner/ranks.py); each builds the
    model, applies the techniques with its own rank in `ctx`, and trains on its slice of the global batch.
    """

    phase: ClassVar[Phase] = Phase.WRAP
    # The rank runner slices the train workload's batches; other workloads have no data-parallel step.
    workloads: ClassVar[frozenset[str] | None] = frozenset({"train"})
    exact: ClassVar[bool] = True  # the same global batch and averaged gradients: the baseline's losses

    config: DataParallelConfig

    def launch_ranks(self, ctx: Context) -> int:
        return self.config.ranks

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        import torch.distributed as dist

        ranks = self.config.ranks
        if not dist.is_available():
            return "this torch build has no torch.distributed"
        if ctx.batch_size % ranks:
            return f"batch_size {ctx.batch_size} does not split into {ranks} equal per-rank batches"
        if ctx.device != "cuda":
            return None if dist.is_gloo_available() else "this torch build has no gloo backend for CPU ranks"
        if not env.nccl_available:
            return "this torch build has no nccl backend for CUDA ranks"
        visible = env.cuda_device_count
        if visible < ranks:
            return f"{ranks} ranks need one CUDA device each; {visible} visible"
        return None


def require_process_group(name: str) -> Any:
    """torch.distributed, initialised: these techniques only make sense inside ranks launched for them."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"{name} runs in ranks that the case process launches (launch_ranks > 1); "
            "no process group is initialised in this process"
        )
    return dist


class Zero1(DataParallel):
    """ZeRO stage 1 (Rajbhandari et al. 2019): AdamW state partitioned over data-parallel ranks.

    DDP replicates weights and all-reduces gradients; torch's ZeroRedundancyOptimizer gives each rank the
    AdamW state of about 1/N of the parameters (whole tensors, balanced greedily by size), steps only those,
    and broadcasts the updated weights. Saves: optimizer state per rank 8P -> 8P/N bytes (fp32), so a rank
    holds 4P weights + 4P gradients + 8P/N state. DDP's gradient buckets are used as the .grad tensors
    (gradient_as_bucket_view), so gradients are not held twice.
    Costs: an all-reduce of the gradients and a broadcast of the weights every step; one process per rank
    (each with its own torch runtime, activations of batch/N samples).
    Exact: losses equal the single-process baseline's up to fp32 summation order.
    """

    name: ClassVar[str] = "zero1"
    conflicts: ClassVar[Mapping[str, str]] = Conflicts(
        {
            "fsdp2": "both shard over the same ranks; FSDP2 already shards optimizer state (it is ZeRO-3)",
            "chunked_cross_entropy": OUTSIDE_FORWARD,
        },
        "ZeRO-1 wraps AdamW itself: it shards that optimizer's state",
        lambda optimizer: False,
    )

    class Config(DataParallelConfig):
        lr: float = Field(default=1e-3, gt=0)
        """Learning rate of the sharded AdamW (the baseline's: 1e-3)."""
        weight_decay: float = Field(default=0.01, ge=0.0)
        """Decoupled weight decay (torch's AdamW default, as the baseline)."""

    config: Config

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        import torch

        require_process_group(self.name)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.cuda.current_device()] if ctx.device == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)

    def build_optimizer(self, params: list[torch.nn.Parameter], ctx: Context) -> torch.optim.Optimizer:
        import torch

        require_process_group(self.name)
        from torch.distributed.optim import ZeroRedundancyOptimizer

        # foreach=False, as for the baseline: the multi-tensor path allocates whole-state temporaries.
        return ZeroRedundancyOptimizer(
            params,
            optimizer_class=torch.optim.AdamW,
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            foreach=False,
        )
