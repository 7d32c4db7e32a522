"""Technique registry: every module in this package defines one technique and registers it by import."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness._registry import import_package_modules
from harness.techniques.base import Context, Environment, Phase, StepPlan, Technique, TechniqueConfig
from harness.techniques.order import rank

__all__ = [
    "Context",
    "Environment",
    "Phase",
    "StepPlan",
    "Technique",
    "TechniqueConfig",
    "compose",
    "conflict",
    "get",
    "names",
]


def _load_all() -> None:
    import_package_modules(__name__, __path__)


def names() -> list[str]:
    _load_all()
    return sorted(Technique.registry)


def get(name: str) -> type[Technique]:
    _load_all()
    return Technique.registry[name]


def instantiate(name: str, options: Mapping[str, Any] | None) -> Technique:
    cls = get(name)
    return cls(cls.Config.model_validate(dict(options or {})))


def compose(specs: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[Technique]:
    """Instances in composition order: by phase, then techniques/order.py's table, then name."""
    techs = [instantiate(name, opts) for name, opts in specs]
    return sorted(techs, key=lambda t: (t.phase, rank(t.name), t.name))


def conflict(techniques: Iterable[Technique]) -> str | None:
    """The first conflicting pair with its reason, or None. Conflicts are declared on either side."""
    items = list(techniques)
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            reason = a.conflicts_with(b) or b.conflicts_with(a)
            if reason:
                return f"{a.name} conflicts with {b.name}: {reason}"
    return None
