"""The end-of-run table: per model and workload, each technique against its baseline.

The numbers come from the report's own pipeline (harness.report.tidy) and every header, unit and
format from the metric catalog (harness.metrics), so the terminal and the HTML report can never
disagree on which peak is compared or how a ratio is taken. At 80 columns the headers are abbreviated
and a legend under the table spells them out; names wrap, never truncate.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from harness import metrics
from harness.errors import HarnessError
from harness.metrics.record import flatten
from harness.report.gate import gate_source, gated_memory_metrics
from harness.report.tidy import (
    DISTURBED_MARK,
    MEMORY_DISTURBED_NOTE,
    cell_mark,
    is_missing,
    memory_disturbed,
    quality_cell,
    savings,
    tidy,
    time_ratio_detail,
)

# Below this console width the table uses short headers and prints a legend.
WIDE = 120


@dataclass(frozen=True)
class Column:
    metric: str  # catalog name of the figure shown
    short: str  # header at 80 columns, explained in the legend


COLUMNS = (
    Column("tensor_peak_bytes", "T MiB"),
    Column("tensor_peak_ratio", "T x"),
    Column("process_peak_bytes", "P MiB"),
    Column("process_peak_ratio", "P x"),
    Column("step_time_s_median", "ms"),
    Column("step_time_ratio", "t x"),
    Column("quality_delta", "dQ"),
)


def _committed_gates() -> Collection[str]:
    # The run's results are saved already: a broken policy file costs the mark, not the table.
    try:
        return gated_memory_metrics()
    except HarnessError:
        return frozenset()


def summary_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every record against its baseline (harness.case.baseline_key)."""
    return savings(tidy(pd.DataFrame([flatten(r) for r in records])))


def _cells(r: pd.Series) -> list[str]:
    cells = [str(r["techniques_name"]), str(r["status"])]
    for col in COLUMNS:
        if col.metric == "quality_delta":
            cells.append(quality_cell(r["quality_delta"], r["quality_noise"]))
        elif not is_missing(r[col.metric]):
            mark = cell_mark(col.metric, {str(k): v for k, v in r.items()})[0]
            cells.append(metrics.get(col.metric).show(r[col.metric]) + mark)
        else:
            cells.append(metrics.get(col.metric).show(r[col.metric]))
    return cells


def _headers(wide: bool, gated: Collection[str], frame: pd.DataFrame) -> list[str]:
    """Short headers at 80 columns; at CI width the catalog's names, two lines each."""
    heads = []
    for col in COLUMNS:
        metric = metrics.get(col.metric)
        if wide:
            unit = "" if metric.header == metric.display else metric.screen_unit
            head = metric.display.replace(" / ", "\n/ ") + (f"\n{unit}" if unit else "")
        else:
            head = col.short
        heads.append(head + (" *" if _gated(col.metric, gated, frame) else ""))
    return ["technique", "status", *heads]


def _gated(metric: str, gated: Collection[str], frame: pd.DataFrame) -> bool:
    source = {"tensor_peak_bytes": "tensor_peak_metric", "process_peak_bytes": "process_peak_metric"}.get(
        metric
    )
    return bool(source) and any(m in gated for m in frame[str(source)] if not is_missing(m))


def _sources(frame: pd.DataFrame, column: str) -> str:
    names = sorted({str(m) for m in frame[column] if not is_missing(m)})
    return ", ".join(names) or "not measured"


def legend(frame: pd.DataFrame, gated: Collection[str], wide: bool) -> list[str]:
    """What each short header means and which record figure each memory column shows."""
    tensor, process = _sources(frame, "tensor_peak_metric"), _sources(frame, "process_peak_metric")
    mark = {
        c: " (* gated)" if _gated(c, gated, frame) else ""
        for c in ("tensor_peak_bytes", "process_peak_bytes")
    }
    disturbed = any(time_ratio_detail({str(k): v for k, v in r.items()})[0] for _, r in frame.iterrows())
    busy = f"'{DISTURBED_MARK}' = step times disturbed by other work on the machine (read CPU time)"
    pressed = any(memory_disturbed({str(k): v for k, v in r.items()}) for _, r in frame.iterrows())
    low = f"'{DISTURBED_MARK}' on P = {MEMORY_DISTURBED_NOTE}"
    notes = [*([busy] if disturbed else []), *([low] if pressed else [])]
    if any(mark.values()):
        notes.append(f"* gated = judged by {gate_source()}")
    if wide:
        return [
            f"tensor peak = {tensor}{mark['tensor_peak_bytes']}; process peak = {process}"
            f"{mark['process_peak_bytes']}; '=' = a quality change inside its interval or noise band"
            + "".join(f"; {n}" for n in notes)
        ]
    return [
        f"T   tensor peak, MiB: {tensor}{mark['tensor_peak_bytes']}",
        f"P   process peak, MiB: {process}{mark['process_peak_bytes']}",
        "ms  step time median, ms;  x  case / baseline (t x: step time)",
        "dQ  quality change vs baseline, nats; '=' inside its interval or noise band",
        *notes,
    ]


def _notes(group: pd.DataFrame) -> list[str]:
    """Why a case has no figures, in full: errors and reasons are never cut to fit a column."""
    notes = []
    for _, r in group.iterrows():
        text = r["error"] if r["status"] != "ok" else r["baseline_note"]
        if not is_missing(text) and str(text):
            notes.append(f"{r['techniques_name']}: {text}")
    return notes


def print_summary(
    records: list[dict[str, Any]], console: Console | None = None, gated: Collection[str] | None = None
) -> None:
    """One table per model x workload x shape; `gated`: memory figures the gate judges (default: the
    committed policy's)."""
    console = console or Console()
    if not records:
        console.print("no results")
        return
    gated = _committed_gates() if gated is None else gated
    wide = console.width >= WIDE
    df = summary_frame(records)
    for _, group in df.groupby(["model_name", "workload_name", "batch_size", "seq_len"], sort=False):
        first = group.iloc[0]
        title = (
            f"{first['model_name']} / {first['workload_name']}  "
            f"(batch {first['batch_size']}, seq {first['seq_len']}, {first['device']})"
        )
        # One space of padding (left) plus the box's divider: two columns apart, room left for names.
        table = Table(
            title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False
        )
        for i, head in enumerate(_headers(wide, gated, df)):
            # Names wrap (fold) and never truncate; statuses and numbers keep one line.
            table.add_column(head, justify="right" if i > 1 else "left", overflow="fold", no_wrap=i > 0)
        for _, r in group.iterrows():
            table.add_row(*_cells(r))
        console.print(table)
        for line in _notes(group):
            console.print(line, markup=False, highlight=False)
    for line in legend(df, gated, wide):
        console.print(line, markup=False, highlight=False)
