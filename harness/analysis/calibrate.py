"""The CPU's achievable matmul FLOP/s, measured once per machine and cached: MFU's peak on CPU.

A CPU has no datasheet figure that torch reaches, so the peak is the best FLOP/s of a few square
matmuls at the case's thread count: MFU on CPU then says how close the model's step comes to the
best the same library does on the same cores. It is a lower bound of the true peak, and noisy on a
loaded machine (the best of several repeats is taken against that).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from harness.corpus import cache_dir
from harness.results.provenance import cpu_model

MATMUL_SIZE = 1024  # large enough to be compute-bound, small enough to take ~0.1 s on 2 cores
REPEATS = 5
CALIBRATION_VERSION = 1


def measure_matmul_flop_per_s(
    dtype: str, threads: int, size: int = MATMUL_SIZE, repeats: int = REPEATS
) -> float:
    """Best achieved FLOP/s (2*n^3 per product) of `repeats` n x n matmuls in `dtype`."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
        b = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
        torch.mm(a, b)  # warm-up: thread pool, oneDNN kernel selection
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / best


def _cache_file(dtype: str, threads: int) -> Path:
    key = (
        f"{cpu_model()}|{os.cpu_count()}|torch {torch.__version__}|{dtype}|t{threads}|v{CALIBRATION_VERSION}"
    )
    safe = "".join(ch if ch.isalnum() else "_" for ch in key)
    return cache_dir() / "calibration" / f"{safe}.json"


def cpu_peak_flop_per_s(dtype: str, threads: int) -> float:
    """The cached calibration for this CPU, torch version, dtype and thread count; measured if absent
    or unreadable."""
    path = _cache_file(dtype, threads)
    try:
        value = float(json.loads(path.read_text())["matmul_flop_per_s"])
        if value > 0:
            return value
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or corrupt: measure again
    value = measure_matmul_flop_per_s(dtype, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"matmul_flop_per_s": value, "dtype": dtype, "threads": threads, "size": MATMUL_SIZE})
    )
    tmp.replace(path)
    return value
