"""Which memory figures the CI gate judges, so the summary and the report can mark them.

The compare policy decides (results/baselines/policy.yaml when it exists, else the catalog's defaults);
this module only reads it.
"""

from __future__ import annotations

from pathlib import Path

from harness.compare.policy import MemoryPolicy, load_policy

COMMITTED_POLICY = Path("results/baselines/policy.yaml")


def gated_memory_metrics(policy_path: Path | None = None, suite: str | None = None) -> frozenset[str]:
    """Names of the memory figures a comparison gates (policy file given, else the committed one)."""
    path = policy_path if policy_path is not None else COMMITTED_POLICY
    policy = load_policy(path if path.is_file() else None)
    resolved = policy.for_suite(suite)
    return frozenset(name for name, p in resolved.items() if isinstance(p, MemoryPolicy) and p.gate)


def gate_source(policy_path: Path | None = None) -> str:
    """Which policy decided what is gated: the file, or the built-in defaults where there is none (the
    committed one is read from the working directory, so a reader must be told)."""
    path = policy_path if policy_path is not None else COMMITTED_POLICY
    return str(path) if path.is_file() else "the built-in defaults (no results/baselines/policy.yaml here)"
