"""One metric catalog and one typed record: what every figure is, how it is shown, judged and documented.

Pure: no torch, no pandas, so `harness validate`, compare and the report can all import it.

    from harness import metrics
    metrics.get("host_rss_peak_above_base_bytes").header   # 'process peak above base, MiB'
    metrics.Record.from_json(line).value("breakdown.tensor_peak_bytes")
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.metrics import catalog
from harness.metrics.base import Metric, Section, base_unit, name_pattern
from harness.metrics.catalog import HEADLINE_MEMORY, NUMERIC_LABELS, QUALITY_ORDER, UNIT_EXCEPTIONS
from harness.metrics.record import Headline, Record

__all__ = [
    "HEADLINE_MEMORY",
    "NUMERIC_LABELS",
    "QUALITY_ORDER",
    "UNIT_EXCEPTIONS",
    "Headline",
    "Metric",
    "Record",
    "Section",
    "all_metrics",
    "base_unit",
    "columns",
    "gate_defaults",
    "get",
    "lookup",
    "name_pattern",
]


def all_metrics(scope: str | None = None) -> Iterator[Metric]:
    """Every catalog entry (of one scope: record, manifest, timeline, derived), in document order."""
    for section in catalog.SECTIONS:  # read at call time, so a test can add an entry
        for metric in section.metrics:
            if scope is None or metric.scope == scope:
                yield metric


_CACHE: dict[int, dict[str, Metric]] = {}


def _by_name() -> dict[str, Metric]:
    # Record-scope names win over manifest/timeline ones that share a name (`run_id`, `started_at`).
    key = id(catalog.SECTIONS)
    if key not in _CACHE:
        _CACHE.clear()
        table: dict[str, Metric] = {}
        for metric in all_metrics():
            table.setdefault(metric.name, metric)
        _CACHE[key] = table
    return _CACHE[key]


def get(name: str) -> Metric:
    """The catalog entry of an exact name; KeyError naming the catalog when there is none."""
    try:
        return _by_name()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the metric catalog (harness/metrics/catalog.py)") from None


def lookup(key: str, scope: str = "record") -> Metric | None:
    """The entry a flattened key belongs to (`phases.build.duration_s` -> `phases.<phase>.duration_s`)."""
    exact = _by_name().get(key)
    if exact is not None and exact.scope == scope:
        return exact
    return next((m for m in all_metrics(scope) if m.pattern.fullmatch(key)), None)


def gate_defaults() -> dict[str, Metric]:
    """Metrics a comparison judges when no policy says otherwise, with the kind of judgement each gets."""
    return {m.name: m for m in all_metrics() if m.gate is not None}


def columns() -> list[Metric]:
    """The report tables' metric columns, in their order (the catalog's `column` field)."""
    return sorted((m for m in all_metrics() if m.column), key=lambda m: m.column)
