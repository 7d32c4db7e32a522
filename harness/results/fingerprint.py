"""What a figure's numerics depend on beyond the CPU's model name: its instruction set, its exact
microarchitecture, and the torch build. Two CPUs sold as "AMD EPYC" (one with bf16 instructions, one with
AVX2 only) gave inference losses 0.2 % apart; the manifest must tell them apart, and compare must too."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

# Instruction-set flags that change which kernels torch dispatches to (and so the rounding of results).
ISA_PREFIXES = ("avx2", "avx512", "amx", "fma", "f16c")
ISA_NAMES = ("bf16", "avx_vnni", "asimd", "sve", "sve2", "neon")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: the others are alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def isa_flags(flags: str) -> list[str]:
    """The ISA-relevant subset of a cpuinfo flags line, sorted."""
    keep = {f for f in flags.split() if f.startswith(ISA_PREFIXES) or f in ISA_NAMES or "bf16" in f}
    return sorted(keep)


def cpu_isa() -> str | None:
    """e.g. 'avx2 avx512_bf16 ... fma'; 'none' when the CPU has none of them; None when unknown."""
    info = _cpuinfo()
    flags = info.get("flags") or info.get("Features")
    if flags is None:
        return None
    return " ".join(isa_flags(flags)) or "none"


def cpu_microarch() -> str:
    """Vendor, family, model and stepping (one model name covers several of these)."""
    info = _cpuinfo()
    parts = [info.get(k) for k in ("vendor_id", "cpu family", "model", "stepping")]
    if any(parts):
        vendor, family, model, stepping = (p or "?" for p in parts)
        return f"{vendor} family {family} model {model} stepping {stepping}"
    return f"{platform.machine()} {platform.processor()}".strip()


def torch_build() -> str:
    """Version, source commit, CUDA and the CPU capability torch dispatches to on this machine."""
    import torch

    capability = "unknown"
    with contextlib.suppress(AttributeError, RuntimeError):
        capability = str(torch.backends.cpu.get_cpu_capability())
    git = (torch.version.git_version or "")[:12]
    return f"{torch.__version__} git {git} cuda {torch.version.cuda} cpu {capability}"
