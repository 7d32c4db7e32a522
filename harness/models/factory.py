"""`factory:` model source: the user's own nn.Module, built by a function they name.

Contract (docs/models.md): `module:function` is importable, `function(**kwargs)` returns an nn.Module
whose forward takes token ids (B, T) int64 and returns logits (B, T, V) with V = the entry's vocab_size.

This file is torch-free: the suite check finds the module file and the function's definition in it
without executing the module (importing a user's model module usually imports torch), so
`harness validate` stays fast; the case process imports and calls it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class FactoryEntryError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key, self.problem = key, problem


@dataclass(frozen=True)
class FactoryModelConfig:
    """`target` = "module:function"; `path` = a folder put first on sys.path for the import (the case
    process does not import from the working directory), None when the module is importable as is."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 256
    max_seq_len: int = 1024
    path: str | None = None
    source: Literal["factory"] = "factory"

    def replace(self, **changes: Any) -> FactoryModelConfig:
        raise ValueError(
            f"a factory module's structure is its own: harness cannot set {', '.join(changes)} on it; "
            "change it in your factory's kwargs"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": "factory",
            "factory": self.target,
            "kwargs": self.kwargs,
            "vocab_size": self.vocab_size,
            "max_seq_len": self.max_seq_len,
            "path": self.path,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FactoryModelConfig:
        return FactoryModelConfig(
            target=d["factory"],
            kwargs=dict(d["kwargs"]),
            vocab_size=d["vocab_size"],
            max_seq_len=d["max_seq_len"],
            path=d.get("path"),
        )

    def load(self) -> Any:
        """Import the module and return the function (in the case process)."""
        if self.path and self.path not in sys.path:
            sys.path.insert(0, self.path)
        module_name, _, func = self.target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, func)


def resolve(entry: dict[str, Any], search: list[Path]) -> FactoryModelConfig:
    """The entry's fields checked: `factory` is "module:function", the module file is found (in `search`
    folders, then on sys.path) and defines the function at top level."""
    allowed_keys = {"factory", "kwargs", "vocab_size", "max_seq_len", "path"}
    for key in entry:
        if key not in allowed_keys:
            from harness.errors import allowed, closest

            raise FactoryEntryError(
                key, f"unknown key; allowed: {allowed(allowed_keys)}{closest(key, allowed_keys)}"
            )
    target = entry["factory"]
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise FactoryEntryError(
            "factory", f"expected 'module:function' (got {target!r}), e.g. 'mypkg.models:build'"
        )
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise FactoryEntryError(
            "kwargs", f"must be a mapping of the factory's keyword arguments (got {kwargs!r})"
        )
    for key in ("vocab_size", "max_seq_len"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise FactoryEntryError(key, f"must be a positive integer (got {value!r})")
    folders = list(search)
    if entry.get("path") is not None:
        folder = Path(str(entry["path"]))
        folder = folder if folder.is_absolute() or not search else search[0] / folder
        if not folder.is_dir():
            raise FactoryEntryError(
                "path", f"{entry['path']} is not a folder; name the one that holds the module"
            )
        folders.insert(0, folder)
    path = check_target(target, folders)
    return FactoryModelConfig(
        target=target,
        kwargs=kwargs,
        vocab_size=entry.get("vocab_size") or 256,
        max_seq_len=entry.get("max_seq_len") or 1024,
        path=path,
    )


def check_target(target: str, folders: list[Path]) -> str | None:
    """Find `module:function` without running the module; returns the folder to put on sys.path (None
    when it is importable as is). FactoryEntryError says what is missing."""
    module_name, _, func = target.partition(":")
    file, folder = _find_module(module_name, folders)
    if file is None:
        raise FactoryEntryError(
            "factory",
            f"cannot find module {module_name!r} (searched {', '.join(str(f) for f in folders)} and "
            "sys.path); install it, put it on PYTHONPATH or set `path:` to the folder that holds it",
        )
    names = _top_level_names(file)
    if names is not None and func not in names:
        from harness.errors import closest

        raise FactoryEntryError(
            "factory",
            f"module {module_name!r} ({file}) defines no {func!r} at top level{closest(func, names)}",
        )
    return folder


def _find_module(name: str, folders: list[Path]) -> tuple[Path | None, str | None]:
    parts = name.split(".")
    for folder in folders:
        base = folder.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, str(folder.resolve())
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None, None
    origin = Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    return (origin or Path(name)), None


def _top_level_names(file: Path) -> set[str] | None:
    """Names a module defines at top level (functions, classes, assignments, imports); None if the file
    cannot be read as Python source (a compiled module: the import in the case process will tell)."""
    try:
        tree = ast.parse(file.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def replace_kwargs(cfg: FactoryModelConfig, **kwargs: Any) -> FactoryModelConfig:
    return dataclasses.replace(cfg, kwargs={**cfg.kwargs, **kwargs})
