"""Workload registry: every module in this package defines workloads and registers them by import."""

from __future__ import annotations

import importlib
import pkgutil

from harness.workloads.base import Session, Workload, WorkloadConfig

__all__ = ["Session", "Workload", "WorkloadConfig", "get", "names"]

_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base" and not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def names() -> list[str]:
    _load_all()
    return sorted(Workload.registry)


def get(name: str) -> type[Workload]:
    _load_all()
    return Workload.registry[name]
