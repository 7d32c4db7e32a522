from __future__ import annotations

from typing import ClassVar

from harness.techniques.base import Phase, Technique


class Baseline(Technique):
    """No technique: fp32 weights, explicit attention, AdamW. Every other combination is compared to it.

    A suite may write `baseline` alone or an empty list; both mean the same case.
    """

    name: ClassVar[str] = "baseline"
    phase: ClassVar[Phase] = Phase.CONFIG
    exact: ClassVar[bool] = True
