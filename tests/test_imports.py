"""Import hygiene of the package: no cycles, no private names across modules, and the `harness validate`
path (suite loading, every technique and workload module) imports without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "harness"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(current: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[current].name == "__init__.py"
    base = current.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> list[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for every import anywhere in the module,
    function-level ones included: they close a cycle as surely when they run."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from package import module` imports that module, not a name.
                out.append((sub, None) if sub in MODULES else (target, alias.name))
    return [(m, n) for m, n in out if m in MODULES]


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports_of(m) if t != m} for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{m} imports {n} from {t}"
        for m in MODULES
        for t, n in imports_of(m)
        if n is not None and n.startswith("_") and not n.startswith("__")
    ]
    assert private == []


# Modules on the `harness validate` path; technique and workload modules are all loaded there.
TORCH_FREE = """
import sys
from harness.suite.load import load_suite
from harness import techniques, workloads
load_suite({suite!r})
techniques.names(); workloads.names()
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, "torch imported on the validate path: " + ", ".join(loaded[:5])
"""


@pytest.mark.parametrize("suite", ["suites/smoke.yaml", "suites/all.yaml"])
def test_loading_a_suite_and_every_technique_and_workload_does_not_import_torch(suite):
    code = TORCH_FREE.format(suite=str(ROOT / suite))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_harness_validate_runs_without_torch():
    # `harness validate` through the CLI's own entry, with torch made unimportable: it must not need it.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from harness.cli import main\n"
        f"raise SystemExit(main(['validate', {str(ROOT / 'suites/all.yaml')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
