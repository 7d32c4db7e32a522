"""What a case process and a rank process both do around the measured steps: run the steps, read the
GPU allocator's phase peaks, classify a failure, state the model's figures. Imported by runner/child.py
and runner/ranks.py, so neither imports the other's helpers (no import cycle)."""

from __future__ import annotations

import re
import time
import traceback
from typing import Any

from harness.units import size_bytes


def gpu_phase(torch: Any, on_cuda: bool) -> dict[str, Any]:
    """torch's allocator peaks since the last mark, then reset, so every phase has its own peak."""
    if not on_cuda:
        return {}
    torch.cuda.synchronize()
    out = {
        "gpu_peak_allocated_bytes": int(torch.cuda.max_memory_allocated()),
        "gpu_peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
    }
    torch.cuda.reset_peak_memory_stats()
    return out


def oom_bytes(message: str) -> int | None:
    """The allocation size an OOM message names (CPU: 'you tried to allocate N bytes'; CUDA: 'Tried to
    allocate 2.00 GiB')."""
    m = re.search(r"tried to allocate (\d+) bytes", message, re.I)
    if m:
        return int(m.group(1))
    m = re.search(r"Tried to allocate ([\d.]+ (?:B|KiB|MiB|GiB|TiB))", message)
    return size_bytes(m.group(1)) if m else None


def classify(exc: BaseException, torch: Any) -> dict[str, Any]:
    msg = f"{type(exc).__name__}: {exc}".strip()
    first = msg.splitlines()[0][:500]
    is_oom = isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError)))
    is_oom = is_oom or "can't allocate memory" in msg or "out of memory" in msg.lower()
    if is_oom:
        return {"status": "oom", "error": first, "oom_requested_bytes": oom_bytes(msg)}
    if type(exc).__name__ == "UnsupportedModel":  # harness.models.source: the model lacks a needed part
        return {"status": "unsupported", "error": str(exc)[:500]}
    return {"status": "error", "error": first, "traceback_tail": traceback.format_exc()[-4000:]}


def model_figures(model: Any) -> dict[str, int]:
    from harness.analysis.storage import dense_param_count, stored_weight_bytes

    params = {id(p): p for p in model.parameters()}.values()  # shared tensors counted once
    buffers = {id(b): b for b in model.buffers()}.values()
    return {
        # Elements of the dense model it stands for (a 4-bit or CSR layer still represents out x in).
        "param_count": dense_param_count(model),
        # The one model-bytes figure comparable across techniques: every storage once, as stored.
        "stored_weight_bytes": stored_weight_bytes(model),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "trainable_param_count": sum(p.numel() for p in params if p.requires_grad),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in buffers),
    }


def run_steps(
    torch: Any,
    session: Any,
    indices: range,
    out: dict[str, Any],
    on_cuda: bool,
    timed: bool = True,
    stop: Any = None,
) -> None:
    times, cpu = out.setdefault("step_time_s", []), out.setdefault("step_cpu_time_s", [])
    for i in indices:
        if on_cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = session.step(i)
        if on_cuda:
            torch.cuda.synchronize()
        t1, c1 = time.perf_counter(), time.process_time()
        out["loss"].append(loss)
        if timed:
            times.append(t1 - t0)
            cpu.append(c1 - c0)
        if stop is not None and stop():
            key = "memory_pass_measured_step_count" if timed else "memory_pass_warmup_step_count"
            out[key] = len(times) if timed else i - indices.start + 1
            return
