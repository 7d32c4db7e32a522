"""Tidy tables -> a markdown summary for CI logs and GitHub job summaries. Pure: returns a string."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from harness.report.tidy import groups, is_missing, records

MiB = 1024 * 1024
HEADER = ["techniques", "status", "peak MiB", "peak ratio", "step time ratio", "quality delta", "note"]


def cell(value: Any) -> str:
    """A table cell: HTML escaped (job summaries render HTML), pipes and newlines neutralised."""
    if is_missing(value):
        return "-"
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _fmt(value: Any, fmt: str, scale: float = 1.0) -> str:
    return "-" if is_missing(value) else format(float(value) / scale, fmt)


def _row(r: dict[str, Any]) -> str:
    note = r["error"] if r["status"] != "ok" else r["baseline_note"]
    cells = [
        cell(r["techniques_name"]),
        cell(r["status"]),
        _fmt(r["peak_bytes"], ".1f", MiB),
        _fmt(r["peak_ratio"], ".3f"),
        _fmt(r["step_time_ratio"], ".3f"),
        _fmt(r["quality_delta"], "+.4g"),
        cell(str(note)[:200] if not is_missing(note) else None),
    ]
    return "| " + " | ".join(cells) + " |"


def summary_markdown(saved: pd.DataFrame) -> str:
    """Headline counts, then one table per model x workload of the run's savings against its baseline."""
    counts = saved["status"].value_counts().to_dict()
    run_id, commit = saved["run_id"].iloc[0], saved["run_commit"].iloc[0]
    metrics = sorted({str(m) for m in saved["peak_metric"] if not is_missing(m)})
    lines = [
        f"## harness report: run {cell(run_id)} (commit {cell(commit)})",
        "",
        f"{len(saved)} cases: " + ", ".join(f"{n} {cell(s)}" for s, n in sorted(counts.items())) + ".",
        f"Peak memory measured as: {', '.join(metrics) or 'nothing'}. Ratios are case / baseline.",
    ]
    for label, rows in groups(saved):
        lines += ["", f"### {cell(label)}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += [_row(r) for r in records(rows)]
    return "\n".join(lines) + "\n"
