"""`local`: every group on this machine, one after another, straight into the run dir (the default)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.executors.base import CaseResult, Group, OnStart, PassProgress
from harness.executors.node import run_group_here


class LocalExecutor:
    name = "local"

    def run(
        self,
        groups: Sequence[Group],
        run_dir: Path,
        run_id: str,
        profile: str | None,
        on_start: OnStart,
        on_pass: PassProgress | None = None,
    ) -> Iterator[CaseResult]:
        for group in groups:
            for case in group:
                on_start(case)
            for record in run_group_here(group, run_dir, run_id, profile, on_pass):
                yield CaseResult(record["case_id"], record)

    def close(self) -> None:
        return None
