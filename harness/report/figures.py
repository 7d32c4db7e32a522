"""Tidy tables -> plotly figures. Pure: data in, figures out; bytes on disk become MiB only here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from harness import metrics
from harness.report.tidy import BREAKDOWN_CATEGORIES, groups, is_missing, pareto_mask, records, run_order
from harness.timeseries import extreme_indices

MiB = 1024 * 1024
# A timeline trace keeps at most this many points (min and max of each bucket), so a 60-case report stays
# small while every spike survives.
MAX_TIMELINE_POINTS = 400
PHASE_COLORS = {"startup": "#eeeeee", "build": "#dde7f3", "warmup": "#f6ecd4", "measured": "#dcefdc"}
Titled = tuple[str, go.Figure]


def _mib(value: Any) -> float | None:
    return None if is_missing(value) else float(value) / MiB


def _hover(row: Mapping[str, Any]) -> str:
    lines = [str(row.get("case_name")), f"case id {row.get('case_id')}"]
    for name in ("tensor_peak_bytes", "process_peak_bytes", "step_time_s_median", "tokens_per_s"):
        metric = metrics.get(name)
        lines.append(f"{metric.display}: {metric.show(row.get(name))} {metric.screen_unit}")
    delta = metrics.get("quality_delta")
    lines.append(
        f"{delta.display} ({row.get('quality_metric')}): {delta.show(row.get('quality_delta'))} nats"
    )
    # Hover text is rendered as HTML by plotly: escape what users wrote.
    return "<br>".join(escape_plotly(line) for line in lines)


def escape_plotly(text: str) -> str:
    """Plotly renders hover text, tick labels and trace names as HTML-like markup: escape users' strings."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _compact(fig: go.Figure) -> None:
    fig.update_layout(height=420, margin={"t": 30, "b": 50, "l": 60, "r": 20}, template="plotly_white")


def pareto_figures(saved: pd.DataFrame) -> list[Titled]:
    """Peak memory vs tokens/s per model x workload; colour = quality delta; the frontier drawn."""
    figures = []
    ok = saved[(saved["status"] == "ok") & saved["peak_bytes"].notna() & saved["tokens_per_s"].notna()]
    for label, rows in groups(ok):
        # One axis, one figure: rows whose headline peak is another figure (a multi-rank case has no
        # tensor peak, only its ranks' RSS) are named under the chart, never drawn on this axis.
        metric = rows["peak_metric"].value_counts().index[0]
        fig = _pareto(rows[rows["peak_metric"] == metric])
        others = rows[rows["peak_metric"] != metric]
        if len(others):
            names = ", ".join(escape_plotly(str(n)) for n in others["techniques_name"])
            fig.add_annotation(
                text=f"not drawn (their peak is another figure than this axis'): {names}", showarrow=False,
                xref="paper", yref="paper", x=0, y=-0.28, xanchor="left", font={"size": 11},
            )  # fmt: skip
        figures.append((f"Pareto: {label}", fig))
    return figures


def quality_colour(delta: Any, noise: Any) -> float:
    """A quality change for the colour scale: 0 (neutral) when missing or inside its noise band."""
    if is_missing(delta) or (not is_missing(noise) and abs(float(delta)) <= float(noise)):
        return 0.0
    return float(delta)


# Green = lower loss (better), grey = no change beyond noise, red = higher loss.
# The scale spans at least +-0.05 nats, so a real but negligible change (bf16's +2e-4) stays pale
# instead of taking the full red of a scale stretched to the largest change on the chart.
QUALITY_SPAN_MIN_NATS = 0.05
QUALITY_SCALE = [[0.0, "#1a9850"], [0.45, "#d9efd9"], [0.5, "#d9d9d9"], [0.55, "#f7d4d0"], [1.0, "#d73027"]]


def _pareto(rows: pd.DataFrame) -> go.Figure:
    mem = [float(v) / MiB for v in rows["peak_bytes"]]
    tps = [float(v) for v in rows["tokens_per_s"]]
    colour = [quality_colour(d, n) for d, n in zip(rows["quality_delta"], rows["quality_noise"], strict=True)]
    span = max([QUALITY_SPAN_MIN_NATS, *(abs(c) for c in colour)])
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
            x=mem, y=tps, mode="markers", name="cases",
            hovertext=[_hover(r) for r in records(rows)], hoverinfo="text",
            marker={"size": 12, "color": colour, "line": {"width": 1, "color": "#333"},
                    "colorscale": QUALITY_SCALE, "cmin": -span, "cmax": span, "showscale": True,
                    "colorbar": {"title": {"text": "quality change, nats<br>(grey: within noise)"}}},
        )
    )  # fmt: skip
    for m, t, name in zip(mem, tps, rows["techniques_name"], strict=True):
        # Labels as annotations so plotly can move them apart; each points at its own marker.
        fig.add_annotation(x=m, y=t, text=escape_plotly(str(name)), showarrow=True, arrowhead=0,
                           arrowcolor="#999", ax=0, ay=-22, font={"size": 11})  # fmt: skip
    _spread_labels(fig)
    metric = metrics.get(str(rows["peak_metric"].iloc[0]))
    fig.update_layout(
        xaxis_title=f"{metric.display}, MiB", yaxis_title="throughput, tokens/s", showlegend=False
    )
    _compact(fig)
    return fig


def _spread_labels(fig: go.Figure) -> None:
    """Stagger the offsets of labels whose markers sit close together, so no two overprint."""
    notes = sorted(fig.layout.annotations, key=lambda a: (a.x, a.y))
    xs = [float(a.x) for a in notes]
    ys = [float(a.y) for a in notes]
    x_span = (max(xs) - min(xs)) or 1.0
    y_span = (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float, int]] = []
    for note, x, y in zip(notes, xs, ys, strict=True):
        near = [p for p in placed if abs(p[0] - x) / x_span < 0.15 and abs(p[1] - y) / y_span < 0.15]
        level = len(near)
        note.ay = -22 - 16 * level if level % 2 == 0 else 22 + 16 * (level - 1)
        placed.append((x, y, level))


def decimate(
    t: Sequence[float], y: Sequence[float], max_points: int = MAX_TIMELINE_POINTS
) -> tuple[list[float], list[float]]:
    """Keep the min and max of each bucket, in time order: a peak is never thinned away."""
    keep = extreme_indices(y, max_points)
    return [t[i] for i in keep], [y[i] for i in keep]


def timeline_figures(
    frame: pd.DataFrame, timelines: Mapping[tuple[str, str], Mapping[str, Any]]
) -> list[Titled]:
    """Per model x workload: each case's memory above its own base, on a phase axis where every case's
    build, warm-up and measured phases line up (each stretched to one unit)."""
    figures = []
    for label, rows in groups(frame):
        # A multi-rank case's timeline is its launcher's (the sampler does not see the ranks): not drawn.
        drawn = [r for r in records(rows) if (r["run_id"], r["case_id"]) in timelines]
        cases = [r for r in drawn if not _multi_rank(r)]
        if cases:
            fig = _timeline(cases, timelines)
            skipped = ", ".join(escape_plotly(str(r["techniques_name"])) for r in drawn if _multi_rank(r))
            if skipped:
                fig.add_annotation(
                    text=f"not drawn (multi-rank: the sampler sees the launcher, not the ranks): {skipped}",
                    showarrow=False, xref="paper", yref="paper", x=0, y=1.08, xanchor="left",
                    font={"size": 11},
                )  # fmt: skip
            figures.append((f"Memory timeline: {label}", fig))
    return figures


def _multi_rank(row: Mapping[str, Any]) -> bool:
    scope: Any = row.get("host_memory_scope")
    return isinstance(scope, str) and scope.startswith("max over ranks")


# The phases whose peaks the record's figures cover; startup (the import ramp) lies below the base and
# extras (quality, breakdown) are never part of a peak, so neither is drawn.
TIMELINE_PHASES = ("build", "warmup", "measured")


def phase_axis(t: Sequence[float], phases: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
    """(indices of the samples inside the drawn phases, their x on the phase axis): phase k of
    TIMELINE_PHASES spans [k, k + 1], so every case's phase marks fall on the same x."""
    spans = {p["name"]: (float(p["t_start_s"]), float(p["t_end_s"])) for p in phases}
    keep: list[int] = []
    xs: list[float] = []
    for k, name in enumerate(TIMELINE_PHASES):
        if name not in spans:
            continue
        t0, t1 = spans[name]
        width = max(t1 - t0, 1e-9)
        for i, ti in enumerate(t):
            if t0 <= ti < t1 or (ti == t1 and name == TIMELINE_PHASES[-1]):
                keep.append(i)
                xs.append(k + (ti - t0) / width)
    return keep, xs


def _base_bytes(case: Mapping[str, Any], series: Sequence[float], keep: list[int]) -> float:
    # The record's own base (RSS right after the imports); else the first drawn sample.
    base: Any = case.get("host_rss_base_bytes")
    return float(base) if not is_missing(base) else float(series[keep[0]]) if keep else 0.0


def _timeline(
    cases: list[dict[str, Any]], timelines: Mapping[tuple[str, str], Mapping[str, Any]]
) -> go.Figure:
    fig = go.Figure()
    for case in cases:
        tl = timelines[(case["run_id"], case["case_id"])]
        name = escape_plotly(str(case["techniques_name"]))
        keep, xs = phase_axis(tl["t_s"], tl.get("phases") or [])
        for key, dash in (("host_rss_bytes", "solid"), ("gpu_process_bytes", "dot")):
            series = tl.get(key)
            if not series or not keep:
                continue
            base = _base_bytes(case, series, keep) if key == "host_rss_bytes" else float(series[keep[0]])
            ys = [(float(series[i]) - base) / MiB for i in keep]
            thin = extreme_indices(ys, MAX_TIMELINE_POINTS)
            seconds = [float(tl["t_s"][keep[i]]) for i in thin]
            fig.add_trace(
                go.Scatter(
                    x=[round(xs[i], 4) for i in thin], y=[round(ys[i], 3) for i in thin], mode="lines",
                    name=name + ("" if key == "host_rss_bytes" else " (GPU process)"), legendgroup=name,
                    line={"dash": dash, "width": 1.5}, customdata=seconds,
                    hovertemplate="%{y:.1f} MiB above base at %{customdata:.2f} s<extra>" + name + "</extra>",
                )
            )  # fmt: skip
    _phase_bands(fig)
    fig.update_layout(
        yaxis_title="MiB above the case's base (RSS after imports)",
        xaxis={"tickvals": [k + 0.5 for k in range(len(TIMELINE_PHASES))], "ticktext": list(TIMELINE_PHASES),
               "range": [0, len(TIMELINE_PHASES)], "showgrid": False, "zeroline": False,
               "title": {"text": "phase (each case's marks aligned; time within a phase stretched)"}},
        legend={"orientation": "h", "y": -0.25},
    )  # fmt: skip
    _compact(fig)
    fig.update_layout(height=460, margin={"b": 110})
    return fig


def _phase_bands(fig: go.Figure) -> None:
    # Aligned phases share one band each: every case's phases are shaded, and each label appears once.
    for k, name in enumerate(TIMELINE_PHASES):
        fig.add_vrect(x0=k, x1=k + 1, line_width=0, layer="below", fillcolor=PHASE_COLORS[name], opacity=0.5)


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
    names = [escape_plotly(str(n)) for n in rows["techniques_name"]]
    x = [
        [n for n in names for _ in kinds],
        [("measured" if k == "breakdown" else k) for _ in names for k in kinds],
    ]
    fig = go.Figure()
    for cat in BREAKDOWN_CATEGORIES:
        values = [_mib(r[f"{k}.{cat}_bytes"]) for r in records(rows) for k in kinds]
        if any(v is not None for v in values):
            fig.add_trace(go.Bar(x=x, y=values, name=cat))
    fig.update_layout(barmode="stack", yaxis_title="tensor bytes at the step's peak, MiB")
    _compact(fig)
    return fig


# Catalog names of the figures drawn across runs (`peak_bytes`: the headline memory figure of each row).
HISTORY_METRICS = ("tensor_peak_bytes", "process_peak_bytes", "step_time_s_median", "quality")


def history_figures(frame: pd.DataFrame) -> list[Titled]:
    """Each metric per case across runs, oldest first, labelled by commit and start time. A case is its
    id: two cases that share a name but not a definition are two lines."""
    runs = run_order(frame)
    if len(runs) < 2:
        return []
    first = frame.drop_duplicates("run_id").set_index("run_id")
    labels = {
        r: escape_plotly(
            f"{str(first.at[r, 'run_commit'] or r)[:12]} {first.at[r, 'run_started_at'] or ''!s}"
        )
        for r in runs
    }
    names = frame.drop_duplicates("case_id").groupby("case_name")["case_id"].nunique()
    figures = []
    for name in HISTORY_METRICS:
        metric = metrics.get(name)
        if not frame[name].notna().any():
            continue
        axis = metric.header
        fig = go.Figure()
        for case_id, rows in frame.groupby("case_id", sort=False):
            case_name = str(rows["case_name"].iloc[0])
            label = case_name if names.get(case_name, 1) == 1 else f"{case_name} [{str(case_id)[:6]}]"
            ys = [None if is_missing(v) else float(v) / metric.scale for v in rows[name]]
            fig.add_trace(go.Scatter(x=[labels[r] for r in rows["run_id"]], y=ys, mode="lines+markers",
                                     name=escape_plotly(label)))  # fmt: skip
        fig.update_layout(yaxis_title=axis, xaxis={"type": "category", "categoryorder": "array",
                                                   "categoryarray": [labels[r] for r in runs]})  # fmt: skip
        _compact(fig)
        figures.append((f"History: {metric.display}", fig))
    return figures
