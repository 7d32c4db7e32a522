"""Tidy tables -> a markdown summary for CI logs and GitHub job summaries. Pure: returns a string."""

from __future__ import annotations

import html
from collections.abc import Collection
from typing import Any

import pandas as pd

from harness.metrics import Metric
from harness.report.html import savings_columns
from harness.report.tidy import (
    DISTURBED_MARK,
    MEMORY_DISTURBED_NOTE,
    cell_mark,
    groups,
    is_missing,
    memory_disturbed,
    quality_cell,
    records,
    time_ratio_detail,
)


def cell(value: Any) -> str:
    """A table cell: HTML escaped (job summaries render HTML), pipes and newlines neutralised."""
    if is_missing(value):
        return "-"
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _value(metric: Metric, r: dict[str, Any]) -> str:
    if metric.name == "quality_delta":
        return quality_cell(r["quality_delta"], r["quality_noise"])
    if metric.kind == "label":
        return cell(r[metric.name])
    shown = metric.show(r[metric.name])
    return shown if is_missing(r[metric.name]) else shown + cell_mark(metric.name, r)[0]


def _note(r: dict[str, Any]) -> str:
    note = r["error"] if r["status"] != "ok" else r["baseline_note"]
    return "" if is_missing(note) else str(note)


def _row(r: dict[str, Any], columns: list[Metric], notes: bool) -> str:
    cells = [cell(r["techniques_name"]), cell(r["status"]), *(_value(m, r) for m in columns)]
    if notes:
        cells.append(cell(_note(r)[:200]))
    return "| " + " | ".join(cells) + " |"


def summary_markdown(saved: pd.DataFrame, gated: Collection[str] = ()) -> str:
    """Headline counts, then one table per model x workload of the run's savings against its baseline;
    columns, headers and units from the metric catalog, empty columns left out."""
    counts = saved["status"].value_counts().to_dict()
    run_id, commit = saved["run_id"].iloc[0], saved["run_commit"].iloc[0]
    lines = [
        f"## harness report: run {cell(run_id)} (commit {cell(commit)})",
        "",
        f"{len(saved)} cases: " + ", ".join(f"{n} {cell(s)}" for s, n in sorted(counts.items())) + ".",
        _sources(saved, gated),
    ]
    for label, rows in groups(saved):
        columns = savings_columns(rows)
        notes = any(_note(r) for r in records(rows))  # no always-empty column
        header = ["technique", "status", *(m.header for m in columns), *(["note"] if notes else [])]
        lines += ["", f"### {cell(label)}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [_row(r, columns, notes) for r in records(rows)]
    return "\n".join(lines) + "\n"


def _sources(saved: pd.DataFrame, gated: Collection[str]) -> str:
    parts = []
    for label, column in (("tensor peak", "tensor_peak_metric"), ("process peak", "process_peak_metric")):
        names = sorted({str(m) for m in saved[column] if not is_missing(m)})
        marked = [f"`{n}`" + (" (gated)" if n in gated else "") for n in names]
        parts.append(f"{label} = {', '.join(marked) or 'not measured'}")
    disturbed = any(time_ratio_detail(r)[0] for r in records(saved))
    pressed = any(memory_disturbed(r) for r in records(saved))
    return (
        "; ".join(parts)
        + ". Ratios are case / baseline; `=`: a quality change inside its noise band."
        + (f" `{DISTURBED_MARK}`: step times disturbed by other work on the machine." if disturbed else "")
        + (f" `{DISTURBED_MARK}` on a memory figure: {MEMORY_DISTURBED_NOTE}." if pressed else "")
    )
