"""Workload registry: every module in this package defines workloads and registers them by import."""

from __future__ import annotations

from harness._registry import import_package_modules
from harness.workloads.base import Session, Workload, WorkloadConfig

__all__ = ["Session", "Workload", "WorkloadConfig", "get", "names"]


def _load_all() -> None:
    import_package_modules(__name__, __path__)


def names() -> list[str]:
    _load_all()
    return sorted(Workload.registry)


def get(name: str) -> type[Workload]:
    _load_all()
    return Workload.registry[name]
