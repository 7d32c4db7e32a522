"""Tidy tables -> plotly figures. Pure: data in, figures out; bytes on disk become MiB only here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from harness.report.tidy import BREAKDOWN_CATEGORIES, groups, is_missing, pareto_mask, records, run_order
from harness.timeseries import extreme_indices

MiB = 1024 * 1024
# A timeline trace keeps at most this many points (min and max of each bucket), so a 60-case report stays
# a few MB while every spike survives.
MAX_TIMELINE_POINTS = 800
PHASE_COLORS = {"startup": "#eeeeee", "build": "#dde7f3", "warmup": "#f6ecd4", "measured": "#dcefdc"}
Titled = tuple[str, go.Figure]


def _mib(value: Any) -> float | None:
    return None if is_missing(value) else float(value) / MiB


def _hover(row: Mapping[str, Any]) -> str:
    keys = ("case_name", "case_id", "techniques_name", "peak_metric", "step_time_s_median", "quality_metric")
    lines = [f"{k}: {row.get(k)}" for k in keys]
    lines.insert(4, f"peak: {_mib(row.get('peak_bytes')) or 0:.1f} MiB")
    lines.append(f"quality: {row.get('quality')}  (delta {row.get('quality_delta')})")
    lines.append(f"tokens/s: {row.get('tokens_per_s')}")
    # Hover text is rendered as HTML by plotly: escape what users wrote.
    return "<br>".join(_escape_plotly(line) for line in lines)


def _escape_plotly(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _compact(fig: go.Figure) -> None:
    fig.update_layout(height=420, margin={"t": 30, "b": 50, "l": 60, "r": 20}, template="plotly_white")


def pareto_figures(saved: pd.DataFrame) -> list[Titled]:
    """Peak memory vs tokens/s per model x workload; colour = quality delta; the frontier drawn."""
    figures = []
    ok = saved[(saved["status"] == "ok") & saved["peak_bytes"].notna() & saved["tokens_per_s"].notna()]
    for label, rows in groups(ok):
        figures.append((f"Pareto: {label}", _pareto(rows)))
    return figures


def _pareto(rows: pd.DataFrame) -> go.Figure:
    mem = [float(v) / MiB for v in rows["peak_bytes"]]
    tps = [float(v) for v in rows["tokens_per_s"]]
    delta = [0.0 if is_missing(v) else float(v) for v in rows["quality_delta"]]
    front = sorted((m, s) for m, s, keep in zip(mem, tps, pareto_mask(mem, tps), strict=True) if keep)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[m for m, _ in front], y=[s for _, s in front], mode="lines", name="frontier",
            line={"dash": "dash", "color": "#888"}, hoverinfo="skip",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=mem, y=tps, mode="markers+text", name="cases",
            text=[_escape_plotly(str(n)) for n in rows["techniques_name"]], textposition="top center",
            hovertext=[_hover(r) for r in records(rows)], hoverinfo="text",
            marker={"size": 12, "color": delta, "line": {"width": 1, "color": "#333"},
                    "colorscale": "RdYlGn_r", "cmid": 0.0, "showscale": True,
                    "colorbar": {"title": {"text": "loss delta"}}},
        )
    )  # fmt: skip
    metric = str(rows["peak_metric"].iloc[0])
    fig.update_layout(xaxis_title=f"peak memory, MiB ({metric})", yaxis_title="tokens/s", showlegend=False)
    _compact(fig)
    return fig


def decimate(
    t: Sequence[float], y: Sequence[float], max_points: int = MAX_TIMELINE_POINTS
) -> tuple[list[float], list[float]]:
    """Keep the min and max of each bucket, in time order: a peak is never thinned away."""
    keep = extreme_indices(y, max_points)
    return [t[i] for i in keep], [y[i] for i in keep]


def timeline_figures(
    frame: pd.DataFrame, timelines: Mapping[tuple[str, str], Mapping[str, Any]]
) -> list[Titled]:
    """Per model x workload: host RSS (and GPU memory where sampled) of every case over time."""
    figures = []
    for label, rows in groups(frame):
        cases = [r for r in records(rows) if (r["run_id"], r["case_id"]) in timelines]
        if cases:
            figures.append((f"Memory timeline: {label}", _timeline(cases, timelines)))
    return figures


def _timeline(
    cases: list[dict[str, Any]], timelines: Mapping[tuple[str, str], Mapping[str, Any]]
) -> go.Figure:
    fig = go.Figure()
    reference = next((c for c in cases if c["is_baseline"]), cases[0])
    for case in cases:
        tl = timelines[(case["run_id"], case["case_id"])]
        name = _escape_plotly(str(case["techniques_name"]))
        for key, dash in (("host_rss_bytes", "solid"), ("gpu_process_bytes", "dot")):
            series = tl.get(key)
            if not series:
                continue
            t, y = decimate(tl["t_s"], series)
            fig.add_trace(
                go.Scatter(
                    x=t, y=[v / MiB for v in y], mode="lines", name=f"{name} {key.split('_')[0]}",
                    legendgroup=name, line={"dash": dash},
                )
            )  # fmt: skip
    _phase_bands(
        fig, timelines[(reference["run_id"], reference["case_id"])], str(reference["techniques_name"])
    )
    fig.update_layout(xaxis_title="time since case start, s", yaxis_title="MiB")
    _compact(fig)
    return fig


def _phase_bands(fig: go.Figure, timeline: Mapping[str, Any], owner: str) -> None:
    # Cases have their own phase times; bands show the reference case's, labelled so.
    for phase in timeline.get("phases") or []:
        fig.add_vrect(
            x0=phase["t_start_s"], x1=phase["t_end_s"], line_width=0, layer="below",
            fillcolor=PHASE_COLORS.get(phase["name"], "#f0f0f0"), opacity=0.6,
            annotation_text=_escape_plotly(f"{phase['name']} ({owner})"), annotation_position="top left",
            annotation_font_size=9,
        )  # fmt: skip


def breakdown_figures(frame: pd.DataFrame) -> list[Titled]:
    """Stacked memory categories per case, the prediction beside the measurement; only where recorded."""
    figures = []
    for label, rows in groups(frame):
        fig = _breakdown(rows)
        if fig is not None:
            figures.append((f"Memory breakdown: {label}", fig))
    return figures


def _breakdown(rows: pd.DataFrame) -> go.Figure | None:
    cols = [f"{k}.{c}_bytes" for k in ("breakdown", "predicted") for c in BREAKDOWN_CATEGORIES]
    rows = rows.loc[rows[cols].notna().any(axis=1)]  # only cases that recorded a breakdown
    kinds = [
        k
        for k in ("breakdown", "predicted")
        if rows[[f"{k}.{c}_bytes" for c in BREAKDOWN_CATEGORIES]].notna().to_numpy().any()
    ]
    if not kinds:
        return None
    names = [_escape_plotly(str(n)) for n in rows["techniques_name"]]
    x = [
        [n for n in names for _ in kinds],
        [("measured" if k == "breakdown" else k) for _ in names for k in kinds],
    ]
    fig = go.Figure()
    for cat in BREAKDOWN_CATEGORIES:
        values = [_mib(r[f"{k}.{cat}_bytes"]) for r in records(rows) for k in kinds]
        if any(v is not None for v in values):
            fig.add_trace(go.Bar(x=x, y=values, name=cat))
    fig.update_layout(barmode="stack", yaxis_title="MiB")
    _compact(fig)
    return fig


HISTORY_METRICS = {
    "peak_bytes": "peak memory, MiB",
    "step_time_s_median": "step time median, s",
    "tokens_per_s": "tokens/s",
    "quality": "quality (loss)",
}


def history_figures(frame: pd.DataFrame) -> list[Titled]:
    """Each metric per case across runs, oldest first, labelled by commit and start time."""
    runs = run_order(frame)
    if len(runs) < 2:
        return []
    first = frame.drop_duplicates("run_id").set_index("run_id")
    labels = {
        r: _escape_plotly(f"{first.at[r, 'run_commit'] or r!s} {first.at[r, 'run_started_at'] or ''!s}")
        for r in runs
    }
    figures = []
    for metric, axis in HISTORY_METRICS.items():
        fig = go.Figure()
        for case_name, rows in frame.groupby("case_name", sort=True):
            scale = MiB if metric == "peak_bytes" else 1.0
            ys = [None if is_missing(v) else float(v) / scale for v in rows[metric]]
            fig.add_trace(go.Scatter(x=[labels[r] for r in rows["run_id"]], y=ys, mode="lines+markers",
                                     name=_escape_plotly(str(case_name))))  # fmt: skip
        fig.update_layout(yaxis_title=axis, xaxis={"type": "category", "categoryorder": "array",
                                                   "categoryarray": [labels[r] for r in runs]})  # fmt: skip
        _compact(fig)
        figures.append((f"History: {axis}", fig))
    return figures
