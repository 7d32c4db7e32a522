"""Named GPUs and the memory a process can use on each: the one table `harness fit --device` reads.

`usable_bytes` is the device memory the driver reports (`nvidia-smi --query-gpu=memory.total`, MiB), as
printed on that card model with ECC at its default; the CUDA context is not subtracted here, because a
measured or estimated peak of a case already includes it (estimate/gpu.py). Sources: the memory.total
that NVIDIA's driver reports for each card (e.g. 81559 MiB on an H100 SXM 80GB), cross-checked against
the vendor datasheet capacity (the driver keeps a few hundred MiB of the nominal size).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 2**20


@dataclass(frozen=True)
class Device:
    name: str
    usable_bytes: int
    source: str


def _d(name: str, mib: int, source: str) -> Device:
    return Device(name, mib * MiB, source)


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        _d("h200-141gb", 143771, "nvidia-smi memory.total, H200 SXM (141 GB HBM3e datasheet)"),
        _d("h100-80gb", 81559, "nvidia-smi memory.total, H100 SXM5 80GB (80 GB HBM3 datasheet)"),
        _d("a100-80gb", 81920, "nvidia-smi memory.total, A100-SXM4-80GB (80 GB HBM2e datasheet)"),
        _d("a100-40gb", 40960, "nvidia-smi memory.total, A100-SXM4-40GB (40 GB HBM2 datasheet)"),
        _d("l40s-48gb", 46068, "nvidia-smi memory.total, L40S (48 GB GDDR6 with ECC datasheet)"),
        _d("a6000-48gb", 49140, "nvidia-smi memory.total, RTX A6000 (48 GB GDDR6 datasheet)"),
        _d("rtx4090-24gb", 24564, "nvidia-smi memory.total, GeForce RTX 4090 (24 GB GDDR6X datasheet)"),
        _d("rtx3090-24gb", 24576, "nvidia-smi memory.total, GeForce RTX 3090 (24 GB GDDR6X datasheet)"),
        _d("l4-24gb", 23034, "nvidia-smi memory.total, L4 (24 GB GDDR6 datasheet; ECC on)"),
        _d("a10g-24gb", 23028, "nvidia-smi memory.total, A10G on AWS g5 (24 GB GDDR6 datasheet)"),
        _d("t4-16gb", 15360, "nvidia-smi memory.total, Tesla T4 (16 GB GDDR6 datasheet)"),
        _d("v100-16gb", 16160, "nvidia-smi memory.total, V100-SXM2-16GB (16 GB HBM2 datasheet)"),
    )
}
