"""`local`: every case on this machine, one after another, straight into the run dir (the default)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.executors.base import CaseResult, Group, OnStart
from harness.executors.node import run_case_here


class LocalExecutor:
    name = "local"

    def run(
        self, groups: Sequence[Group], run_dir: Path, run_id: str, profile: str | None, on_start: OnStart
    ) -> Iterator[CaseResult]:
        for group in groups:
            for case in group:
                on_start(case)
                yield CaseResult(case.case_id, run_case_here(case, run_dir, run_id, profile))

    def close(self) -> None:
        return None
