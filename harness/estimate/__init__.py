"""Device memory of a case without running it for real: the case's code on fake tensors.

`estimate_case` runs the case's real path (workload setup with every technique, one warm-up step and
one tracked step) under `FakeTensorMode` (estimate/fake.py), so no parameter is allocated, and returns
an `estimate` record: the tensor peak by the measured breakdown's categories, and for a `device: cuda`
case the stated model of what sits above tensors (estimate/gpu.py). An estimate never carries a
measured field: its figures sit under `estimated`, the record's `record_kind` is `estimate` and its
status `estimated`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.case import CaseSpec

RECORD_KIND = "estimate"


def estimate_case(case: CaseSpec, run_id: str = "estimate") -> dict[str, Any]:
    """One case's estimate record; a case the estimate cannot run says why under `error`."""
    from harness.runner.case_runner import labels, now_iso

    started, t0 = now_iso(), time.monotonic()
    record: dict[str, Any] = {**labels(case, run_id), "record_kind": RECORD_KIND, "started_at": started}
    reason = _not_estimable(case)
    if reason:
        record.update(status="unsupported", error=reason)
    else:
        try:
            record.update(status="estimated", error=None, **_estimate(case))
        except Exception as e:  # a case the fake run cannot carry is that case's answer
            record.update(status="unsupported", error=_fake_failure(e))
    record["ended_at"] = now_iso()
    record["estimate_wall_s"] = round(time.monotonic() - t0, 3)
    return record


def cpu_twin(case: CaseSpec) -> CaseSpec:
    """The case as the fake run executes it: on CPU, one warm-up step, seeded init instead of trained
    reference weights (the same shapes, so the same bytes; see docs/estimate.md)."""
    return case.model_copy(update={"device": "cpu", "warmup_steps": 1, "reference_steps": 0})


def _estimate(case: CaseSpec) -> dict[str, Any]:
    from harness.estimate import gpu
    from harness.estimate.fake import fake_step_breakdown
    from harness.runner.session import context_for, open_session

    twin = cpu_twin(case)
    on_cuda = case.device == "cuda"
    figures = fake_step_breakdown(
        lambda: open_session(twin, context_for(twin)), twin.warmup_steps, on_cuda=on_cuda
    )
    estimated: dict[str, Any] = dict(figures)
    if on_cuda:
        estimated.update(gpu.above_tensors(int(figures["tensor_peak_bytes"])))
    method = gpu.METHOD_CUDA if on_cuda else gpu.METHOD_CPU
    return {"estimated": estimated, "estimate_method": method, "estimate_mappings": mappings(case)}


def mappings(case: CaseSpec) -> list[str]:
    """What differs between the fake CPU run and the case's device, as applied to this case."""
    if case.device != "cuda":
        return []
    names = {t.name for t in case.techniques}
    out = ["allocator: every storage rounded up to 512 B (applied)"]
    if "sdpa_attention" in names or case.model.get("attention") == "sdpa":
        out.append(
            "sdpa: CPU flash kernel saves output + fp32 logsumexp, as CUDA flash/efficient kernels do "
            "(same bytes; CUDA backward workspace not modelled)"
        )
    if "autocast" in names:
        out.append(
            "autocast: CPU's lower-precision op list (matmul, linear, bmm, SDPA) matches CUDA's; CUDA's fp32 "
            "policy for softmax/log_softmax/layer_norm/group_norm applied (inputs cast to fp32); other CUDA "
            "fp32 ops (exp, pow, sum, cumsum, norms) not applied"
        )
    return out


def _not_estimable(case: CaseSpec) -> str | None:
    from harness.runner.preflight import unsupported_reason
    from harness.runner.ranks import ranks_needed
    from harness.techniques.base import Environment

    # A CUDA case is judged against a GPU machine, not this one: the estimate exists for that machine,
    # which has a GPU for each rank the case asks for.
    on_cuda = case.device == "cuda"
    n = ranks_needed(case)
    env = Environment(
        cuda_available=on_cuda,
        cuda_capability=(9, 0) if on_cuda else None,
        cuda_device_count=n if on_cuda else 0,
        nccl_available=on_cuda,
    )
    reason = unsupported_reason(case, env)
    if reason:
        return reason
    if n > 1:
        return f"needs {n} ranks (ZeRO/FSDP); the estimate runs one process without a process group"
    return None


def _fake_failure(e: BaseException) -> str:
    import traceback

    text = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
    files = [f.filename for f in traceback.extract_tb(e.__traceback__)]
    if any("bitsandbytes" in f for f in files) or "bitsandbytes" in text:
        # torch's message (a fake tensor cannot become a Params4bit, ...) runs to 300 characters and says
        # no more than this; the type stays for whoever debugs it.
        return (
            "cannot run under fake tensors: bitsandbytes runs its own kernels on real memory "
            f"({type(e).__name__}); measure the case on a GPU instead"
        )
    if "Quantized" in text and "backend" in text:  # torch.ao's quint8/qint8 tensors (dynamic int8)
        op = text.split("'")[1] if text.count("'") >= 2 else "a quantized op"
        return (
            "cannot run under fake tensors: torch.ao's quantized tensors have no fake kernel "
            f"({op}); measure the case instead"
        )
    # torch's dispatcher messages go on for lines about custom builds: the first sentence says it
    return f"cannot run under fake tensors: {text.split('. ')[0]}"
