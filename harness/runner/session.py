"""Open a case's workload session in this process: techniques composed, model built, data ready.

The case process calls this between its `imported` and `built` phase marks; tests call it directly to
check a technique's effect without spawning a process.
"""

from __future__ import annotations

from harness import techniques as techreg
from harness import workloads as wlreg
from harness.case import CaseSpec
from harness.models.source import family_of, kv_heads_of, source_kind
from harness.techniques.base import Context, Technique
from harness.workloads.base import Session


def context_for(case: CaseSpec, rank: int = 0, world_size: int = 1) -> Context:
    return Context(
        device=case.device,
        dtype=case.dtype,
        workload=case.workload_kind,
        batch_size=case.batch_size,
        seq_len=case.seq_len,
        seed=case.seed,
        rank=rank,
        world_size=world_size,
        model_source=source_kind(case.model),
        model_family=family_of(case.model),
        model_kv_heads=kv_heads_of(case.model),
    )


def techniques_for(case: CaseSpec) -> list[Technique]:
    return techreg.compose((t.name, t.config) for t in case.techniques)


def open_session(case: CaseSpec, ctx: Context | None = None) -> Session:
    import torch  # here, not at the top: the runner's parent uses context_for without torch

    torch.manual_seed(case.seed)
    ctx = ctx or context_for(case)
    workload = wlreg.get(case.workload_kind)(
        wlreg.get(case.workload_kind).Config.model_validate(case.workload)
    )
    techniques = techniques_for(case)
    session = workload.setup(case, techniques, ctx, case.warmup_steps + case.measured_steps)
    session.techniques = techniques  # the instances that built the model report on it (metrics)
    return session
