from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from harness.techniques.base import Context
from harness.techniques.zero1 import (
    OUTSIDE_FORWARD,
    Conflicts,
    DataParallel,
    DataParallelConfig,
    require_process_group,
)

if TYPE_CHECKING:
    from torch import nn


class FSDP2(DataParallel):
    """Fully sharded data parallel, FSDP2 (`torch.distributed.fsdp.fully_shard`): ZeRO stage 3.

    Every parameter, its gradient and its optimizer state are split along dim 0 over the ranks (DTensor
    shards); each Transformer block is one unit that is all-gathered just before its forward (and again
    before its backward) and freed after, the root unit (embeddings, final norm, LM head) likewise.
    Saves: persistent model state per rank 16P -> 16P/N bytes (fp32 AdamW); at the peak a rank holds one or
    two unsharded blocks besides its shards. With `reshard_after_forward: false` the blocks stay gathered
    from forward to backward (ZeRO-2-like: one all-gather fewer, more memory).
    Costs: an all-gather per unit in forward and backward and a reduce-scatter of the gradients every step;
    one process per rank. Exact: losses equal the single-process baseline's up to fp32 summation order.
    """

    name: ClassVar[str] = "fsdp2"
    conflicts: ClassVar[Mapping[str, str]] = Conflicts(
        {
            "zero1": "both shard over the same ranks; FSDP2 already shards optimizer state (it is ZeRO-3)",
            "chunked_cross_entropy": OUTSIDE_FORWARD,
            "l1_regularization": "its penalty reads whole weights outside forward, where FSDP2 holds shards",
            "cross_layer_sharing": "a block shared by several layers cannot be one FSDP unit per layer",
        },
        "FSDP2 shards parameters as DTensors; this optimizer does not step DTensor shards",
        lambda optimizer: optimizer.steps_dtensor_shards,
    )

    class Config(DataParallelConfig):
        reshard_after_forward: bool = True
        """Free each block's gathered weights after its forward (ZeRO-3); false keeps them to backward."""

    config: Config

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        dist = require_process_group(self.name)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device, (dist.get_world_size(),))
        reshard = self.config.reshard_after_forward
        # One unit per block (what activation checkpointing may have wrapped), then the root gathers
        # the rest (embeddings, final norm, LM head), as torchtitan's parallelize does.
        from harness.models.layout import blocks_or_raise

        for block in blocks_or_raise(model, self.name):
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
        return model
