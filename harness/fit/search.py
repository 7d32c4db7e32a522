"""The largest value along an axis that fits: exponential growth from 1, then binary search.

`probe(v)` answers True (fits), False (does not: over budget, OOM, timeout, crash) or None (the probe
could not answer: an error that is not about memory); the search stops at the first None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SearchResult:
    largest: int  # 0: does not fit at the minimum
    first_failing: int | None  # the smallest value known not to fit; None: the axis maximum fits
    probed: list[tuple[int, bool | None]] = field(default_factory=list)
    undecided: bool = False  # a probe could not answer; `largest` is the last known fit

    @property
    def at_axis_max(self) -> bool:
        return self.first_failing is None and not self.undecided


def largest_fitting(probe: Callable[[int], bool | None], maximum: int, minimum: int = 1) -> SearchResult:
    """From `minimum` (the smallest value the case can take: 1, or a generate case's new tokens + 1 on
    the seq_len axis) up to `maximum`."""
    result = SearchResult(largest=0, first_failing=None)

    def ask(v: int) -> bool | None:
        answer = probe(v)
        result.probed.append((v, answer))
        if answer is None:
            result.undecided = True
        return answer

    first = ask(minimum)
    if not first:
        result.first_failing = minimum if first is False else None
        return result
    lo, hi = minimum, None
    while hi is None:  # grow: 1, 2, 4, ... until a value fails or the axis maximum fits
        if lo >= maximum:
            result.largest = lo
            return result
        nxt = min(lo * 2, maximum)
        answer = ask(nxt)
        if answer is None:
            result.largest = lo
            return result
        if answer:
            lo = nxt
        else:
            hi = nxt
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        answer = ask(mid)
        if answer is None:
            break
        if answer:
            lo = mid
        else:
            hi = mid
    result.largest, result.first_failing = lo, hi
    return result
