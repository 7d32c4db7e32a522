from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.techniques.base import Phase, Technique

if TYPE_CHECKING:
    from harness.analysis.shape import Shape


class Baseline(Technique):
    """No technique: fp32 weights, explicit attention, AdamW. Every other combination is compared to it.

    A suite may write `baseline` alone or an empty list; both mean the same case.
    """

    name: ClassVar[str] = "baseline"
    phase: ClassVar[Phase] = Phase.CONFIG
    exact: ClassVar[bool] = True

    def adjust_prediction(self, shape: Shape) -> str | None:
        return None  # the base formulas describe the baseline
