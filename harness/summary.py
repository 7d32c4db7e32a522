"""The end-of-run table: per model and workload, each technique against its baseline."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

MIB = 2**20
GROUP = ["model_name", "workload_name", "batch_size", "seq_len"]


def peak_bytes(rec: dict[str, Any]) -> tuple[float | None, str]:
    """The memory a user compares: torch's GPU peak on CUDA, else host RSS peak above base."""
    if rec.get("gpu_peak_allocated_bytes") is not None:
        return rec["gpu_peak_allocated_bytes"], "gpu_peak_allocated"
    return rec.get("host_rss_peak_above_base_bytes"), "host_rss_peak_above_base"


def summary_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        peak, kind = peak_bytes(r)
        rows.append(
            {
                **{k: r.get(k) for k in GROUP},
                "techniques": r.get("techniques_name"),
                "is_baseline": not r.get("techniques"),
                "status": r.get("status"),
                "peak_bytes": peak,
                "peak_kind": kind,
                "step_time_s_median": r.get("step_time_s_median"),
                "step_time_s_iqr": r.get("step_time_s_iqr"),
                "tokens_per_s": r.get("tokens_per_s"),
                "final_loss": (r.get("loss") or [None])[-1],
                "error": r.get("error"),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    base = df[df["is_baseline"] & (df["status"] == "ok")].set_index(GROUP)
    keys = list(df[GROUP].itertuples(index=False, name=None))
    df["peak_ratio"] = [
        _ratio(df.at[i, "peak_bytes"], base, k, "peak_bytes") for i, k in zip(df.index, keys, strict=True)
    ]
    df["time_ratio"] = [
        _ratio(df.at[i, "step_time_s_median"], base, k, "step_time_s_median")
        for i, k in zip(df.index, keys, strict=True)
    ]
    return df


def _ratio(value: Any, base: pd.DataFrame, key: tuple[Any, ...], col: str) -> float | None:
    if value is None or pd.isna(value) or key not in base.index:
        return None
    ref = base.loc[key, col]
    if isinstance(ref, pd.Series):
        ref = ref.iloc[0]
    return float(value) / float(ref) if ref else None


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    return format(float(v) / scale, spec)


def print_summary(records: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    df = summary_frame(records)
    if df.empty:
        console.print("no results")
        return
    for key, group in df.groupby(GROUP, sort=False, dropna=False):
        model, workload, b, s = key
        kind = group["peak_kind"].iloc[0].replace("_", " ")
        table = Table(
            title=f"{model} / {workload}  (batch {b}, seq {s}; peak = {kind})", title_justify="left"
        )
        for col in (
            "techniques",
            "status",
            "peak MiB",
            "x baseline",
            "step ms (IQR)",
            "x time",
            "tokens/s",
            "loss",
        ):
            table.add_column(col, justify="left" if col in ("techniques", "status") else "right")
        for _, r in group.iterrows():
            status = r["status"] if r["status"] == "ok" else f"{r['status']}: {str(r['error'] or '')[:60]}"
            step = f"{_fmt(r['step_time_s_median'], '.1f', 1e-3)} ({_fmt(r['step_time_s_iqr'], '.1f', 1e-3)})"
            table.add_row(
                str(r["techniques"]),
                status,
                _fmt(r["peak_bytes"], ".1f", MIB),
                _fmt(r["peak_ratio"], ".2f"),
                step,
                _fmt(r["time_ratio"], ".2f"),
                _fmt(r["tokens_per_s"], ",.0f"),
                _fmt(r["final_loss"], ".4f"),
            )
        console.print(table)
