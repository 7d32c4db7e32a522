"""Plug-in discovery shared by the technique and workload registries: import every module of a package
once, so defining a class in a new file is all it takes to register it (no central list to edit)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

_loaded: set[str] = set()


def import_package_modules(package: str, path: Iterable[str]) -> None:
    """Import each module of `package` except `base` and `_private` ones, once per process."""
    if package in _loaded:
        return
    for info in pkgutil.iter_modules(list(path)):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    _loaded.add(package)
