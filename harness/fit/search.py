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


def _recorder(probe: Callable[[int], bool | None], result: SearchResult) -> Callable[[int], bool | None]:
    """`probe`, with every answer kept in `result` (and a None marking it undecided)."""

    def ask(v: int) -> bool | None:
        answer = probe(v)
        result.probed.append((v, answer))
        if answer is None:
            result.undecided = True
        return answer

    return ask


def largest_fitting(probe: Callable[[int], bool | None], maximum: int, minimum: int = 1) -> SearchResult:
    """From `minimum` (the smallest value the case can take: 1, or a generate case's new tokens + 1 on
    the seq_len axis) up to `maximum`."""
    result = SearchResult(largest=0, first_failing=None)
    ask = _recorder(probe, result)

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


def largest_below(probe: Callable[[int], bool | None], fails_at: int, minimum: int = 1) -> SearchResult:
    """The largest value that fits, knowing `fails_at` does not (an estimate's answer a real run refused):
    step down from just under it (estimates are near: 0.9x first, then halving) to a value that fits,
    then binary search up to `fails_at`. Few probes when the estimate was close."""
    result = SearchResult(largest=0, first_failing=fails_at)
    ask = _recorder(probe, result)

    hi, v = fails_at, max(minimum, min(fails_at - 1, int(fails_at * 0.9)))
    while True:
        answer = ask(v)
        if answer is None:
            return result
        if answer:
            break
        hi = v
        if v == minimum:
            result.first_failing = minimum
            return result
        v = max(minimum, v // 2)
    lo = v
    while hi - lo > 1:
        mid = (lo + hi) // 2
        answer = ask(mid)
        if answer is None:
            break
        lo, hi = (mid, hi) if answer else (lo, mid)
    result.largest, result.first_failing = lo, hi
    return result
