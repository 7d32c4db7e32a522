"""The end-of-run table: per model and workload, each technique against its baseline.

The numbers come from the report's own pipeline (harness.report.tidy), so the terminal and the HTML
report can never disagree on which peak is compared or how a ratio is taken.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.report.tidy import is_missing, savings, tidy
from harness.results.load import flatten

MIB = 2**20
COLUMNS = ("techniques", "status", "peak MiB", "x baseline", "step ms (IQR)", "x time", "tokens/s", "loss")


def summary_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every record against the baseline of its model, workload, batch and sequence length."""
    return savings(tidy(pd.DataFrame([flatten(r) for r in records])))


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if is_missing(v) else format(float(v) / scale, spec)


def _row(r: pd.Series) -> list[str]:
    status = r["status"] if r["status"] == "ok" else f"{r['status']}: {str(r['error'] or '')[:60]}"
    step = f"{_fmt(r['step_time_s_median'], '.1f', 1e-3)} ({_fmt(r['step_time_s_iqr'], '.1f', 1e-3)})"
    return [
        str(r["techniques_name"]),
        status,
        _fmt(r["peak_bytes"], ".1f", MIB),
        _fmt(r["peak_ratio"], ".2f"),
        step,
        _fmt(r["step_time_ratio"], ".2f"),
        _fmt(r["tokens_per_s"], ",.0f"),
        _fmt(r["final_loss"], ".4f"),
    ]


def print_summary(records: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    if not records:
        console.print("no results")
        return
    df = summary_frame(records)
    for _, group in df.groupby(["model_name", "workload_name", "batch_size", "seq_len"], sort=False):
        first = group.iloc[0]
        kind = str(first["peak_metric"] or "peak").replace("_", " ")
        title = (
            f"{first['model_name']} / {first['workload_name']}  "
            f"(batch {first['batch_size']}, seq {first['seq_len']}; peak = {kind})"
        )
        table = Table(title=title, title_justify="left")
        for col in COLUMNS:
            table.add_column(col, justify="left" if col in ("techniques", "status") else "right")
        for _, r in group.iterrows():
            table.add_row(*_row(r))
        console.print(table)
