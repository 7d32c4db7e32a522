"""The "fits on" page of a `harness fit` run: side by side, a heat map (rows technique combinations,
columns budgets, colour the largest batch or seq that fits, text the cell) and the Pareto chart of each
cell's largest fitting probe (peak memory vs tokens/s, budgets as lines); below, the same table as HTML.
`--format md` writes the table as markdown.

`read_fit` and `fit_report` do the I/O; `fit_page` is pure (records in, page out).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIT_FILE = "fit.jsonl"
# Two plots in one row, each at least 540 px wide; on a narrower window one column (stacked plots). A
# grid with auto-fill keeps both columns while the page is still parsing (a flex row would give the first
# plot the whole width when it draws, before the second exists, and plotly would not shrink it).
ROW_STYLE = "display:grid;grid-template-columns:repeat(auto-fill,minmax(min(540px,100%),1fr));gap:1em"
CELL_STYLE = "min-width:0"


@dataclass
class FitRun:
    """The answers (one per combination x budget x axis, later lines win) and probes of fit runs, and
    the paths given alongside that are not fit runs (left to their own report)."""

    answers: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    others: list[Path] = field(default_factory=list)


def _fit_file(path: Path) -> Path | None:
    f = path / FIT_FILE if path.is_dir() else path
    return f if f.name == FIT_FILE and f.is_file() else None


def read_fit(paths: Sequence[Path]) -> FitRun | None:
    """The fit runs among `paths`, or None when none is one (then the measurement report takes them)."""
    files = [f for f in map(_fit_file, paths) if f is not None]
    if not files:
        return None
    answers: dict[tuple[str, str, str], dict[str, Any]] = {}
    probes: list[dict[str, Any]] = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a kill
                continue
            if not isinstance(r, dict):
                continue
            if r.get("record_kind") == "fit_answer":
                answers[(str(r["combination"]), str(r["budget"]), str(r["axis"]))] = r
            elif r.get("record_kind") == "fit_probe":
                probes.append(r)
    others = [p for p in paths if _fit_file(p) is None]
    return FitRun(list(answers.values()), probes, others)


def fit_answers(paths: Sequence[Path]) -> list[dict[str, Any]] | None:
    """The answers of the fit runs among `paths` (later lines win), or None when none is a fit run."""
    run = read_fit(paths)
    return None if run is None else run.answers


def fit_report(paths: Sequence[Path], out: Path, fmt: str) -> Path | None:
    """Write the fits-on view when `paths` hold fit runs; None leaves them to the measurement report."""
    run = read_fit(paths)
    if run is None:
        return None
    from harness.errors import HarnessError
    from harness.fit.view import fit_markdown

    if not run.answers:
        raise HarnessError(
            f"{', '.join(map(str, paths))}: a fit run without answers yet; finish it with --resume"
        )
    if fmt not in ("html", "md"):
        raise HarnessError(f"a fit run reports as html or md, not {fmt}")
    if run.others:
        # Unchanged since the fit view came: the fit run wins; say so instead of dropping them silently.
        names = shlex.join(str(p) for p in run.others)  # quoted: the line is a command to paste
        print(f"note: the fits-on page shows only the fit run; {names} left out: `harness report {names}`")
    budgets = list(dict.fromkeys(str(a["budget"]) for a in run.answers))
    target = out / f"fit.{fmt}" if out.is_dir() else out
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "md":
        target.write_text(fit_markdown(run.answers, budgets), encoding="utf-8")
        return target
    from harness.report.bundle import write_plotly_bundle

    target.write_text(fit_page(run.answers, run.probes, write_plotly_bundle(target.parent)), encoding="utf-8")
    return target


def fit_page(
    answers: Sequence[Mapping[str, Any]], probes: Sequence[Mapping[str, Any]], plotly_src: str
) -> str:
    """The whole page: the heat map beside the Pareto chart (stacked when the window is narrow), what
    the chart leaves out and why, then the table."""
    from harness.report import html as page
    from harness.report.fit_plots import budget_sizes, fit_heatmap, fit_pareto, fit_points, unplotted

    rows = [dict(a) for a in answers]
    sizes = budget_sizes(rows)
    axis = str(answers[0]["axis"])
    points = fit_points(answers, probes)
    heat_title = f"Fits on: the largest {axis} under each budget"
    pareto_title = f"Memory vs throughput at the largest {axis} that fits"
    row = (
        f'<div style="{ROW_STYLE}">'
        f'<div style="{CELL_STYLE}">{page.figure_divs([(heat_title, fit_heatmap(answers))])}</div>'
        f'<div style="{CELL_STYLE}">{page.figure_divs([(pareto_title, fit_pareto(points, sizes, axis))])}'
        f"{_left_out_html(unplotted(points, answers))}</div></div>"
    )
    methods = frozenset(str(a.get("method")) for a in rows)
    method = {
        frozenset({"run"}): "measured",
        frozenset({"estimate"}): "estimated, checked by one real probe where the device exists",
    }.get(methods, "measured, some estimated")
    return page.render_page(
        title="Fits on: the largest shape under each budget",
        summary=(
            f"{len({a['combination'] for a in answers})} technique combinations x {len(sizes)} budgets; "
            f"answers {method}; rows ranked by the largest fit, ties broken by throughput"
        ),
        sections=[("Fits on", row), ("Table", _table_html(rows, list(sizes)))],
        figure_count=2,
        plotly_src=plotly_src,
    )


def _left_out_html(groups: Sequence[tuple[str, Sequence[str]]]) -> str:
    from harness.report.html import esc

    if not groups:
        return ""
    items = "".join(f"<li><b>{esc(why)}</b>: {esc('; '.join(cells))}</li>" for why, cells in groups)
    head = '<p class="note">Not on the chart, or not on its front:</p>'
    return f'{head}<ul class="note fit-left-out">{items}</ul>'


def _table_html(answers: list[dict[str, Any]], budgets: list[str]) -> str:
    from harness.fit.view import cell_text, grid
    from harness.report.html import esc

    rows, cells = grid(answers, budgets)
    head = "".join(f"<th>{esc(b)}</th>" for b in budgets)
    body = "".join(
        f"<tr><td>{esc(r)}</td>"
        + "".join(f"<td>{esc(cell_text(cells.get((r, b))))}</td>" for b in budgets)
        + "</tr>"
        for r in rows
    )
    first = "<th>model/workload/techniques</th>"
    return f"<table><thead><tr>{first}{head}</tr></thead><tbody>{body}</tbody></table>"
