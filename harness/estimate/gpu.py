"""What sits above tensors on a CUDA device: the stated model an estimate adds to its tensor peak.

Every constant is an assumption with a source, documented in docs/estimate.md; none is a measurement of
this machine. Where a GPU is lent, `.ci/gpu-check` reports measured / estimated per case, which is what
tells whether they hold.
"""

from __future__ import annotations

MiB = 2**20

# The CUDA context (driver state, kernels of torch's CUDA libraries) that the first CUDA call creates.
# Reported between ~300 MiB and ~1 GiB depending on GPU, driver and CUDA version (PyTorch forum,
# "What is the reason for pytorch's GPU memory floor?": 723 MiB for one 4-byte tensor); with CUDA's lazy
# module loading (default since CUDA 11.7) it is at the low end. Assumed: 512 MiB.
CUDA_CONTEXT_BYTES = 512 * MiB

# The caching allocator (c10/cuda/CUDACachingAllocator.cpp) rounds every block up to 512 bytes
# (kMinBlockSize), serves blocks under 1 MiB from 2 MiB segments and rounds larger segments up to 2 MiB
# (kRoundLarge). The 512-byte rounding is applied per storage by the tracker (estimate/fake.py); the
# segment rounding and fragmentation are modelled as a fraction of the allocated peak.
BLOCK_BYTES = 512
SEGMENT_BYTES = 2 * MiB
# Reserved above allocated at the peak: fragmentation between freed and reused segments. Assumed 5 %;
# the GPU check reports measured reserved / estimated reserved.
RESERVE_OVERHEAD_FRACTION = 0.05


def above_tensors(allocated_peak_bytes: int) -> dict[str, int]:
    """The allocator's reserved peak and the device total for a given allocated (tensor) peak."""
    segments = -(-allocated_peak_bytes // SEGMENT_BYTES) * SEGMENT_BYTES
    reserved = int(segments * (1 + RESERVE_OVERHEAD_FRACTION))
    return {
        "gpu_peak_allocated_bytes": allocated_peak_bytes,
        "gpu_peak_reserved_bytes": reserved,
        "cuda_context_bytes": CUDA_CONTEXT_BYTES,
        "gpu_device_total_bytes": reserved + CUDA_CONTEXT_BYTES,
    }


METHOD_CUDA = (
    "fake-tensor run of the case on CPU under MemTracker, storages rounded to 512 B as the CUDA caching "
    f"allocator does; reserved = allocated rounded to 2 MiB segments x {1 + RESERVE_OVERHEAD_FRACTION:g}; "
    f"device total = reserved + CUDA context {CUDA_CONTEXT_BYTES // MiB} MiB (assumptions: docs/estimate.md)"
)
METHOD_CPU = "fake-tensor run of the case on CPU under MemTracker (the measured breakdown's tracker)"
