"""Sizes written by people (`24GiB`, `512MiB`, `1.5GB`, `8e9`) -> bytes: one parser for every option."""

from __future__ import annotations

import math
import re

UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
         "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*")


def size_bytes(text: str) -> int | None:
    """The bytes `text` names, or None when it is not a size (callers word the error for their option)."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in UNITS:
        return None
    value = float(m.group(1)) * UNITS[m.group(2).lower()]
    return int(value) if math.isfinite(value) else None  # 1e400 overflows to inf: no size
