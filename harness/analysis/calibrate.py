"""The CPU's achievable matmul FLOP/s, measured once per machine and cached: MFU's peak on CPU.

A CPU has no datasheet figure that torch reaches, so the peak is the best FLOP/s of a few square
matrix products at the case's thread count: MFU on CPU then says how close the model's step comes to
the best the same library does on the same cores. It is a lower bound of the true peak, and noisy on a
loaded machine (the best of several repeats is taken against that).

Each dtype is calibrated through every path a model's matmuls take: `torch.mm` and `F.linear` (what
nn.Linear calls). They differ by orders of magnitude in bf16 on CPUs without bf16 matrix units: version
1 timed `torch.mm` only, found a bf16 peak of 2.6e8 FLOP/s, 120x below fp32, while an autocast bf16
training step achieved 1.4e9 through `F.linear`: an MFU of 5.33. The best path is the peak.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from harness.corpus import cache_dir
from harness.results.provenance import cpu_model

MATMUL_SIZE = 1024  # large enough to be compute-bound, small enough to take ~0.1 s on 2 cores
REPEATS = 5
CALIBRATION_VERSION = 2  # 2: the best of mm and linear (1 timed mm only; its bf16 peak was too low)
SLOW_S = 0.5  # a product slower than this is timed once: repeats would only cost time


def measure_matmul_flop_per_s(
    dtype: str, threads: int, size: int = MATMUL_SIZE, repeats: int = REPEATS
) -> float:
    """Best achieved FLOP/s (2*n^3 per product) of n x n products in `dtype`, over torch.mm and F.linear."""
    import torch
    import torch.nn.functional as F

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
        b = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
        best = min(_best_time(lambda: torch.mm(a, b), repeats), _best_time(lambda: F.linear(a, b), repeats))
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / best


def _best_time(product: Callable[[], object], repeats: int) -> float:
    """Shortest of `repeats` timings after a warm-up (thread pool, oneDNN kernel selection); a path
    slower than SLOW_S is timed by its warm-up alone."""
    t0 = time.perf_counter()
    product()
    best = time.perf_counter() - t0
    if best > SLOW_S:
        return best
    for _ in range(repeats):
        t0 = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t0)
    return best


def _cache_file(dtype: str, threads: int) -> Path:
    import torch

    key = (
        f"{cpu_model()}|{os.cpu_count()}|torch {torch.__version__}|{dtype}|t{threads}|v{CALIBRATION_VERSION}"
    )
    safe = "".join(ch if ch.isalnum() else "_" for ch in key)
    return cache_dir() / "calibration" / f"{safe}.json"


def cpu_peak_flop_per_s(dtype: str, threads: int, at_least: float = 0.0) -> float:
    """The cached calibration for this CPU, torch version, dtype and thread count; measured if absent
    or unreadable, and measured again when below `at_least` (FLOP/s a step achieved): a calibration
    taken while other work loaded the machine is too low, and the best of both is kept."""
    path = _cache_file(dtype, threads)
    cached = 0.0
    try:
        cached = float(json.loads(path.read_text())["matmul_flop_per_s"])
        if cached >= max(at_least, 1e-300):
            return cached
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or corrupt: measure again
    value = max(measure_matmul_flop_per_s(dtype, threads), cached)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"matmul_flop_per_s": value, "dtype": dtype, "threads": threads, "size": MATMUL_SIZE})
    )
    tmp.replace(path)
    return value
