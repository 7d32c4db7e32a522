"""The two figures of the fits-on page, from a fit run's answers and probes. Pure: records in, figures out.

- the heat map: rows technique combinations, columns budgets, colour the largest batch (or seq) that
  fits, text the cell; `does not fit at 1` and unanswered cells are their own colours, not 0 of the scale;
- the Pareto chart: the largest fitting probe of each combination under each budget, its peak memory
  against its tokens/s, the front of the non-dominated points and each budget as a vertical line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from harness.fit.view import DOES_NOT_FIT, cell_text, grid
from harness.report.figures import escape_plotly
from harness.report.tidy import pareto_mask

MiB = 1024 * 1024
# What each probe's `peak_kind` (harness/fit/run.py: peak_for / estimated_peak) measures, in words.
PEAK_DEFINITIONS = {
    "host_rss_peak_above_base_bytes": "host RSS above the post-import base",
    "host_rss_peak_bytes": "host RSS of the case process",
    "gpu_process_peak_bytes": "device total (NVML process peak)",
    "gpu_peak_reserved_bytes + cuda_context_bytes": "device total (allocator reserved + CUDA context)",
    "estimated.gpu_device_total_bytes": "device total (tensors + allocator reserve + CUDA context)",
    "estimated.tensor_peak_bytes": "tensor peak",
}
AXIS_UNITS = {"batch_size": "sequences", "seq_len": "tokens"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
DOES_NOT_FIT_COLOUR = "#e8a09a"
NO_ANSWER_COLOUR = "#d9d9d9"
# Above this spread of memory (largest / smallest of points and budget lines) the x axis is logarithmic,
# so a 80 GiB budget line does not squash 200 MiB points against the y axis.
LOG_X_SPREAD = 30.0


@dataclass(frozen=True)
class FitPoint:
    """The largest fitting probe of one combination under one budget."""

    combination: str
    budget: str
    value: int
    peak_bytes: int | None
    peak_kind: str | None
    estimated: bool  # the peak is a fake-tensor estimate, not a measurement
    over_budget: bool  # an estimated answer whose real probe did not fit: drawn, but off the front
    tokens_per_s: float | None
    cell: str

    @property
    def plotted(self) -> bool:
        return self.peak_bytes is not None and self.tokens_per_s is not None


def budget_sizes(answers: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
    """Budget name -> its bytes, in first-seen order (the columns' order)."""
    sizes: dict[str, int | None] = {}
    for a in answers:
        size = a.get("budget_bytes")
        sizes.setdefault(str(a["budget"]), int(size) if isinstance(size, (int, float)) else None)
    return sizes


def budget_label(name: str, size: int | None) -> str:
    """`host (15.2 GiB)`: a named budget with its size; a byte budget (`200MiB`) is its own size."""
    if size is None or name.replace(" ", "").lower() == _size_text(size).replace(" ", "").lower():
        return name
    return f"{name} ({_size_text(size)})"


def _size_text(size: int) -> str:
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / MiB:.0f} MiB"


def fit_points(answers: Sequence[Mapping[str, Any]], probes: Sequence[Mapping[str, Any]]) -> list[FitPoint]:
    """One point per answer that fits at 1 or more: the peak of the real probe at the answer where one
    ran (measured), else of the estimate there; tokens/s as the answer recorded them."""
    at: dict[tuple[str, str, str, int, str], Mapping[str, Any]] = {}
    for p in probes:
        if p.get("peak_bytes") is not None and isinstance(p.get("value"), int):
            key = (str(p["combination"]), str(p["budget"]), str(p["axis"]), p["value"], str(p["method"]))
            at[key] = p
    points = []
    for a in answers:
        largest = a.get("largest")
        if not isinstance(largest, int) or largest < 1:
            continue
        combo, budget, axis = str(a["combination"]), str(a["budget"]), str(a["axis"])
        probe = at.get((combo, budget, axis, largest, "run")) or at.get(
            (combo, budget, axis, largest, "estimate")
        )
        tps = a.get("tokens_per_s")
        points.append(
            FitPoint(
                combination=str(a["combination"]),
                budget=str(a["budget"]),
                value=largest,
                peak_bytes=int(probe["peak_bytes"]) if probe else None,
                peak_kind=str(probe.get("peak_kind")) if probe else None,
                estimated=bool(probe and probe.get("method") == "estimate"),
                # runs below a refused estimate found the answer: it fits, measured
                over_budget=a.get("verified_by_run") is False and a.get("largest_estimated") is None,
                tokens_per_s=float(tps) if isinstance(tps, (int, float)) and tps > 0 else None,
                cell=cell_text(dict(a)),
            )
        )
    return points


def peak_definition(kinds: Sequence[str | None]) -> str:
    names = dict.fromkeys(PEAK_DEFINITIONS.get(k, k) for k in kinds if k)
    return " / ".join(names) or "peak"


def fit_heatmap(answers: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Colour: log2 of the largest fit (ticks in plain numbers), so 1 and 4096 both read; the cells that
    fit nothing, or could not be answered, are separate traces in their own colours."""
    sizes = budget_sizes(answers)
    budgets = list(sizes)
    rows, cells = grid([dict(a) for a in answers], budgets)
    x = [escape_plotly(budget_label(b, sizes[b])) for b in budgets]
    y = [escape_plotly(r) for r in rows]
    axis = str(answers[0]["axis"]) if answers else "batch_size"

    def layer(keep: Any, z_of: Any) -> tuple[list[list[Any]], list[list[str]]]:
        z = [[z_of(cells.get((r, b))) if keep(cells.get((r, b))) else None for b in budgets] for r in rows]
        text = [
            [_cell_lines(cells.get((r, b))) if keep(cells.get((r, b))) else "" for b in budgets] for r in rows
        ]
        return z, text

    def largest(a: Any) -> Any:
        return (a or {}).get("largest")

    fits_z, fits_text = layer(
        lambda a: isinstance(largest(a), int) and largest(a) >= 1, lambda a: math.log2(largest(a))
    )
    fig = go.Figure()
    values = [v for row in fits_z for v in row if v is not None]
    top = max(values, default=0.0)
    ticks = list(range(0, math.floor(top) + 1, max(1, math.floor(top) // 6)))
    hover = "%{y}<br>%{x}: %{text}<extra></extra>"
    fig.add_trace(
        go.Heatmap(
            z=fits_z, x=x, y=y, text=fits_text, texttemplate="%{text}", name="fits",
            colorscale="Viridis", zmin=0, zmax=max(top, 1.0), hovertemplate=hover, xgap=2, ygap=2,
            colorbar={"title": {"text": f"largest {axis},<br>{AXIS_UNITS.get(axis, '')}"},
                      "tickvals": ticks, "ticktext": [str(2**t) for t in ticks]},
        )
    )  # fmt: skip
    for name, keep, colour in (
        (DOES_NOT_FIT, lambda a: largest(a) == 0, DOES_NOT_FIT_COLOUR),
        ("no answer", lambda a: largest(a) is None, NO_ANSWER_COLOUR),
    ):
        z, text = layer(keep, lambda a: 1.0)
        if any(v is not None for row in z for v in row):
            fig.add_trace(
                go.Heatmap(
                    z=z, x=x, y=y, text=text, texttemplate="%{text}", name=name, showscale=False,
                    colorscale=[[0.0, colour], [1.0, colour]], hovertemplate=hover, xgap=2, ygap=2,
                    textfont={"color": "#222"},
                )
            )  # fmt: skip
    fig.update_layout(
        height=140 + 44 * len(rows),
        margin={"t": 30, "b": 60, "l": 10, "r": 10},
        template="plotly_white",
        xaxis={"title": {"text": "memory budget"}, "side": "bottom", "type": "category"},
        yaxis={"title": {"text": "model/workload/techniques"}, "autorange": "reversed", "automargin": True,
               "type": "category"},
    )  # fmt: skip
    return fig


def _cell_lines(answer: Any) -> str:
    """The cell text over lines (batch, tokens/s, the real probe's verdict), so plotly need not shrink
    one long line to a size nobody can read."""
    text = escape_plotly(cell_text(answer))
    return text.replace(" · ", "<br>").replace(" (real probe", "<br>(real probe")


def fit_pareto(points: Sequence[FitPoint], sizes: Mapping[str, int | None], axis: str) -> go.Figure:
    """x: the peak in MiB (its definition on the axis), y: tokens/s; one marker per combination x budget
    (colour: the budget; open diamond: an estimated peak; cross: the real probe at an estimated answer
    did not fit); the front of the non-dominated points that fit; each budget a vertical line."""
    shown = [p for p in points if p.plotted]
    mem = [float(p.peak_bytes or 0) / MiB for p in shown]
    tps = [float(p.tokens_per_s or 0.0) for p in shown]
    colours = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(sizes)}
    fig = go.Figure()
    fitting = [(m, s) for p, m, s in zip(shown, mem, tps, strict=True) if not p.over_budget]
    front = sorted(pt for pt, keep in zip(fitting, pareto_mask(*_columns(fitting)), strict=True) if keep)
    fig.add_trace(
        go.Scatter(
            x=[m for m, _ in front], y=[s for _, s in front], mode="lines", name="Pareto front",
            line={"dash": "dash", "color": "#666"}, hoverinfo="skip",
        )
    )  # fmt: skip
    for budget in sizes:
        mine = [(p, m, s) for p, m, s in zip(shown, mem, tps, strict=True) if p.budget == budget]
        if not mine:
            continue
        fig.add_trace(
            go.Scatter(
                x=[m for _, m, _ in mine], y=[s for _, _, s in mine], mode="markers",
                name=escape_plotly(f"under {budget}"),
                hovertext=[_hover(p, m, axis) for p, m, _ in mine], hoverinfo="text",
                marker={"size": 12, "color": colours[budget], "line": {"width": 1.5},
                        "symbol": [_symbol(p) for p, _, _ in mine]},
            )
        )  # fmt: skip
    top = max(tps, default=0.0) * 1.12 or 1.0
    lines = {b: s / MiB for b, s in sizes.items() if s}
    for budget, x in lines.items():
        fig.add_trace(
            go.Scatter(
                x=[x, x], y=[0, top], mode="lines+text", name=escape_plotly(f"budget {budget}"),
                text=["", escape_plotly(budget) + " "], textposition="bottom left", showlegend=False,
                line={"color": colours[budget], "width": 1.5, "dash": "dot"},
                textfont={"color": colours[budget]},
                hovertext=escape_plotly(f"budget {budget}: {x:,.0f} MiB"), hoverinfo="text",
            )
        )  # fmt: skip
    xs = [*mem, *lines.values()]
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > LOG_X_SPREAD
    kinds = [p.peak_kind for p in shown] or [p.peak_kind for p in points]
    marks = [
        *(["open diamonds: estimated"] if any(p.estimated for p in shown) else []),
        *(["crosses: the real probe did not fit"] if any(p.over_budget for p in shown) else []),
    ]
    how = f" ({'; '.join(marks)})" if marks else ""
    fig.update_layout(
        height=460,
        margin={"t": 30, "b": 60, "l": 70, "r": 10},
        template="plotly_white",
        xaxis={"title": {"text": f"peak memory, MiB: {peak_definition(kinds)}{how}"},
               "type": "log" if log_x else "linear", "rangemode": "tozero"},
        yaxis={"title": {"text": "throughput, tokens/s"}, "rangemode": "tozero", "range": [0, top]},
        legend={"orientation": "h", "y": -0.22},
    )  # fmt: skip
    if not shown:
        fig.add_annotation(
            text="no combination has a measured point to plot", showarrow=False, xref="paper", yref="paper",
            x=0.5, y=0.5, font={"size": 14, "color": "#666"},
        )  # fmt: skip
    return fig


def _columns(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [m for m, _ in points], [s for _, s in points]


def _symbol(p: FitPoint) -> str:
    return "x" if p.over_budget else "diamond-open" if p.estimated else "circle"


def _hover(p: FitPoint, mem_mib: float, axis: str) -> str:
    how = "estimated" if p.estimated else "measured"
    lines = [
        p.combination,
        f"budget {p.budget}: {p.cell}",
        f"{axis} {p.value}: peak {mem_mib:,.1f} MiB ({how}: {peak_definition([p.peak_kind])})",
        f"{p.tokens_per_s or 0:,.0f} tokens/s",
    ]
    return "<br>".join(escape_plotly(line) for line in lines)


def unplotted(
    points: Sequence[FitPoint], answers: Sequence[Mapping[str, Any]]
) -> list[tuple[str, list[str]]]:
    """The cells the Pareto chart leaves out (or off its front), grouped by why: shown under the chart,
    never as 0."""
    groups: dict[str, list[str]] = {}
    for p in points:
        if p.tokens_per_s is None and p.peak_bytes is not None:
            why = "no throughput: estimated only" if p.estimated else "no throughput recorded"
        elif p.peak_bytes is None:
            why = "no peak recorded for the probe at the answer"
        else:
            continue
        groups.setdefault(why, []).append(f"{p.combination} @ {p.budget}: {p.cell}")
    for p in points:
        if p.plotted and p.over_budget:
            why = "off the front (crosses): the real probe at the estimated answer did not fit"
            groups.setdefault(why, []).append(f"{p.combination} @ {p.budget}: {p.cell}")
    combos = len({a["combination"] for a in answers})
    nothing: dict[str, list[str]] = {}  # budget -> the combinations that do not fit at 1 under it
    for a in answers:
        if a.get("largest") == 0:
            nothing.setdefault(str(a["budget"]), []).append(str(a["combination"]))
        elif a.get("largest") is None:
            groups.setdefault("no answer", []).append(
                f"{a['combination']} @ {a['budget']}: {cell_text(dict(a))}"
            )
    for budget, names in nothing.items():
        shown = f"every combination ({combos})" if len(names) == combos > 1 else ", ".join(names)
        groups.setdefault(f"{DOES_NOT_FIT} (nothing to plot)", []).append(f"{budget}: {shown}")
    return list(groups.items())
