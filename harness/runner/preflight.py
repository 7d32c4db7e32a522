"""Before a case process is spent: what this machine offers, whether the case can run here, and the
reference weights it loads. Node-side: it runs wherever the case runs (harness/executors/node.py)."""

from __future__ import annotations

import platform
from pathlib import Path

from harness import workloads as wlreg
from harness.case import CaseSpec
from harness.runner.sampler import Nvml
from harness.runner.session import context_for, techniques_for
from harness.techniques.base import Environment
from harness.workloads.base import Workload


def detect_environment(nvml: Nvml | None = None) -> Environment:
    if nvml is not None and no_gpu_here(nvml):  # the parent need not import torch to know
        return Environment(cuda_available=False, cpu_flags=_cpu_flags())
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    return Environment(
        cuda_available=cuda,
        cuda_device_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_capability=tuple(torch.cuda.get_device_capability(0)) if cuda else None,
        cpu_flags=_cpu_flags(),
        cuda_device_count=torch.cuda.device_count() if cuda else 0,
        nccl_available=dist.is_available() and dist.is_nccl_available(),
    )


def no_gpu_here(nvml: Nvml) -> bool:
    """True when NVML found no NVIDIA driver and there is no other GPU device node (ROCm's /dev/kfd)."""
    return nvml.reason is not None and "driver" in nvml.reason and not Path("/dev/kfd").exists()


def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset({platform.machine()})


def unsupported_reason(case: CaseSpec, env: Environment) -> str | None:
    """Why this case cannot run on this machine, decided before a process is spent on it."""
    if case.device == "cuda" and not env.cuda_available:
        return "device cuda requested, but CUDA is not available on this machine"
    workload_cls = wlreg.get(case.workload_kind)
    if reason := workload_cls(workload_cls.Config.model_validate(case.workload)).case_reason(case):
        return f"{case.workload_kind}: {reason}"
    ctx = context_for(case)
    techs = techniques_for(case)
    for tech in techs:
        if reason := tech.workload_reason(case.workload_kind, wlreg.get(case.workload_kind).trains):
            return reason
        reason = tech.unsupported_reason(env, ctx) or tech.combination_reason(
            [t for t in techs if t is not tech], ctx
        )
        if reason:
            return f"{tech.name}: {reason}"
    return None


def prepare_reference(case: CaseSpec) -> None:
    """Train (or find in the cache) the case's reference weights here, so the case process only loads
    them: the training is no part of the case's time or memory. The workload may have its own (a
    distill case's reference teacher)."""
    workload_cls = wlreg.get(case.workload_kind)
    workload = workload_cls(workload_cls.Config.model_validate(case.workload))
    if not case.uses_reference_weights and type(workload).prepare is Workload.prepare:
        return  # nothing to train or load: the parent need not import torch for this case
    import torch

    torch.set_num_threads(case.threads)  # the reduction order, hence the trained weights, follow it
    if case.uses_reference_weights:
        from harness.data import reference_weights
        from harness.models.source import config_of

        reference_weights(case, config_of(case.model))
    workload.prepare(case)
