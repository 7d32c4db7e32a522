"""`harness compare BASELINE CURRENT`: a regression gate CI can trust (exit codes: see judge.py)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.compare.github import to_github
from harness.compare.judge import Comparison, compare
from harness.compare.outputs import json_text, render_terminal, to_junit, to_markdown
from harness.compare.policy import PolicyFile, load_policy
from harness.compare.snapshot import Snapshot, load_snapshot, write_baseline
from harness.errors import EXIT_OK, HarnessError, write_text_file

__all__ = ["Comparison", "compare", "compare_snapshots", "run_compare"]


def _metric_names(policy: PolicyFile, suites: list[str | None]) -> list[str]:
    return list(dict.fromkeys(name for s in suites for name in policy.for_suite(s)))


def compare_snapshots(
    base: Snapshot, cur: Snapshot, policy: PolicyFile, *, allow_env_change: bool = False
) -> Comparison:
    return compare(base, cur, policy.for_suite, allow_env_change=allow_env_change)


def run_compare(
    baseline: Path,
    current: Path,
    *,
    policy_file: Path | None = None,
    allow_env_change: bool = False,
    junit: Path | None = None,
    md: Path | None = None,
    json_out: Path | None = None,
    update_baseline: bool = False,
    console: Console | None = None,
    fmt: str = "terminal",
) -> int:
    """Compare, print the table, write the requested files, return the exit code (0, 1 or 3).

    With update_baseline, BASELINE (a .json path) is (re)written from CURRENT after the comparison is
    shown, and the exit code is 0: refreshing is the deliberate acceptance of what changed.
    """
    console = console or Console()
    policy_file = policy_file or default_policy_path()
    policy = load_policy(policy_file) if policy_file is not None else NO_FILE_POLICY
    policy_line = f"policy: {policy_file or 'built-in defaults (step times shown, not gated)'}"
    names = _metric_names(policy, [None, *policy.suites])
    cur = load_snapshot(current, names)
    if update_baseline:
        _refuse_disturbed_baseline(cur)
    if update_baseline and not baseline.exists():
        write_baseline(cur, baseline)
        console.print(f"wrote new baseline {baseline} ({len(cur.cases)} cases)", markup=False)
        return EXIT_OK
    comparison = compare_snapshots(
        load_snapshot(baseline, names), cur, policy, allow_env_change=allow_env_change
    )
    if fmt == "github":  # stdout is the comment: nothing else may be printed there
        print(to_github(comparison), end="")
    else:
        console.print(policy_line, markup=False)
        render_terminal(comparison, console)
    _write_outputs(comparison, junit=junit, md=md, json_out=json_out)
    if update_baseline:
        write_baseline(cur, baseline)
        console.print(f"updated baseline {baseline} from {current}", markup=False)
        return EXIT_OK
    return comparison.exit_code


def _refuse_disturbed_baseline(cur: Snapshot) -> None:
    """A baseline every later run is judged against must not hold figures that read low, nor only part
    of its suite."""
    if cur.incomplete:
        raise HarnessError(f"{cur.source}: not written as a baseline: {cur.incomplete}")
    bad = [c for c in cur.cases if c.host_memory_disturbed]
    if bad:
        raise HarnessError(
            f"{cur.source}: not written as a baseline: {len(bad)} case(s) measured under memory pressure "
            f"({bad[0].case_name}: {bad[0].host_memory_disturbed})"
        )


# The committed policy, used when --policy is not given and the file is there (run from a checkout).
COMMITTED_POLICY = Path("results") / "baselines" / "policy.yaml"
# Without any policy file, step times are shown but never gated: the two sides may come from different
# passes, machines or loads, and an A/A pair on one shared machine already moves past any fixed threshold.
NO_FILE_POLICY = PolicyFile(metrics={"step_time_s": {"gate": False}})


def default_policy_path() -> Path | None:
    return COMMITTED_POLICY if COMMITTED_POLICY.is_file() else None


def _write_outputs(
    comparison: Comparison, *, junit: Path | None, md: Path | None, json_out: Path | None
) -> None:
    for path, text in ((junit, to_junit), (md, to_markdown), (json_out, json_text)):
        if path is not None:
            write_text_file(path, text(comparison))
