"""The "fits on" page of a `harness fit` run: a heat map (rows technique combinations, columns budgets,
colour the largest batch or seq that fits, text the cell) and the same table as HTML or markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIT_FILE = "fit.jsonl"


def fit_answers(paths: Sequence[Path]) -> list[dict[str, Any]] | None:
    """The answers of the fit runs among `paths` (later lines win), or None when none is a fit run."""
    files = [p / FIT_FILE if p.is_dir() else p for p in paths]
    files = [f for f in files if f.name == FIT_FILE and f.is_file()]
    if not files:
        return None
    answers: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("record_kind") == "fit_answer":
                answers[(r["combination"], r["budget"], r["axis"])] = r
    return list(answers.values())


def heatmap(answers: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    from harness.fit.view import cell_text, grid

    budgets = list(dict.fromkeys(a["budget"] for a in answers))
    rows, cells = grid(answers, budgets)
    z = [[(cells.get((r, b)) or {}).get("largest") for b in budgets] for r in rows]
    text = [[cell_text(cells.get((r, b))) for b in budgets] for r in rows]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=budgets,
            y=rows,
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": f"largest {answers[0]['axis']}"},
            hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>",
        )
    )
    fig.update_layout(height=120 + 40 * len(rows), margin={"l": 280}, yaxis={"autorange": "reversed"})
    return fig


def fit_report(paths: Sequence[Path], out: Path, fmt: str) -> Path | None:
    """Write the fits-on view when `paths` hold fit runs; None leaves them to the measurement report."""
    answers = fit_answers(paths)
    if answers is None:
        return None
    from harness.errors import HarnessError
    from harness.fit.view import fit_markdown
    from harness.report import html as page

    if not answers:
        raise HarnessError(
            f"{', '.join(map(str, paths))}: a fit run without answers yet; finish it with --resume"
        )
    if fmt not in ("html", "md"):
        raise HarnessError(f"a fit run reports as html or md, not {fmt}")
    budgets = list(dict.fromkeys(a["budget"] for a in answers))
    target = out / f"fit.{fmt}" if out.is_dir() else out
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "md":
        target.write_text(fit_markdown(answers, budgets), encoding="utf-8")
        return target
    from harness.report.bundle import write_plotly_bundle

    title = "Fits on: the largest shape under each budget"
    html = page.render_page(
        title=title,
        summary=f"{len({a['combination'] for a in answers})} technique combinations x {len(budgets)} budgets",
        sections=[
            (title, page.figure_divs([(title, heatmap(answers))])),
            ("Table", _table_html(answers, budgets)),
        ],
        figure_count=1,
        plotly_src=write_plotly_bundle(target.parent),
    )
    target.write_text(html, encoding="utf-8")
    return target


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
