"""Tables and figures -> ONE offline HTML page (plotly.js: one shared file beside it). Pure: returns a string.

Every string that came from a suite, a record or a manifest goes through `esc` (html.escape); the only
raw HTML is this module's own markup and plotly's figure divs.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd

from harness import metrics
from harness.metrics import Metric
from harness.metrics.record import flatten
from harness.report.figures import Titled
from harness.report.tidy import (
    DISTURBED_MARK,
    MEMORY_DISTURBED_NOTE,
    cell_mark,
    groups,
    is_missing,
    memory_disturbed,
    records,
    time_ratio_detail,
)
from harness.results.load import run_env

RENDER_STATUS_ID = "harness-render-status"

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none}
td.t,th.t{text-align:left}
tr.bad td{background:#fde8e8} tr.skip td{background:#f4f4f4;color:#666}
.note{color:#666;font-size:12px} .plot{margin-bottom:1em}
ul.note{margin:0 0 1em;padding-left:1.2em} code{font-size:11px}
.gated{font-size:10px;background:#2b6cb0;color:#fff;border-radius:3px;padding:0 3px;margin-left:3px}
#harness-render-status:not(:empty){color:#b00;font-weight:bold}
"""

# Runs first, before plotly: collects uncaught errors so a headless browser (and a reader) can see them.
ERROR_TRAP = """
window.harnessErrors=[];
window.addEventListener('error',function(e){window.harnessErrors.push(String(e.message));});
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th,col){
  th.addEventListener('click',function(){
    var body=th.closest('table').tBodies[0], rows=Array.from(body.rows);
    var asc=th.dataset.dir!=='asc'; th.dataset.dir=asc?'asc':'desc';
    function key(r){var c=r.cells[col], v=c.dataset.v!==undefined?c.dataset.v:c.textContent;
      var n=parseFloat(v); return isNaN(n)?v:n;}
    rows.sort(function(a,b){var x=key(a),y=key(b);
      if(typeof x!==typeof y){x=String(x);y=String(y);} return (x<y?-1:x>y?1:0)*(asc?1:-1);});
    rows.forEach(function(r){body.appendChild(r);});
  });
});
"""

# Runs last, on load: counts plots that drew their SVG and writes the count where a test can read it.
RENDER_CHECK_JS = """
window.addEventListener('load',function(){
  var plots=document.querySelectorAll('.js-plotly-plot'), drawn=0;
  plots.forEach(function(p){if(p.querySelector('.main-svg'))drawn++;});
  var s=document.getElementById('RENDER_STATUS_ID'), expected=parseInt(s.dataset.expected,10);
  s.dataset.rendered=String(drawn); s.dataset.errors=String(window.harnessErrors.length);
  s.dataset.ok=String(drawn===expected && window.harnessErrors.length===0);
  var errors=window.harnessErrors.length?'; errors: '+window.harnessErrors.join(' | '):'';
  // Said only when something is wrong: a reader needs no "all fine" line.
  if(drawn!==expected||errors){s.textContent=(expected-drawn)+' of '+expected+' charts did not draw'+errors+
    (window.Plotly?'':' (plotly.js not found: keep PLOTLY_SRC beside this page)');}
});
""".replace("RENDER_STATUS_ID", RENDER_STATUS_ID)


def prose(text: str) -> str:
    """Catalog prose as HTML: escaped, `code` spans set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def esc(value: Any) -> str:
    return "" if is_missing(value) else html.escape(str(value), quote=True)


def _text(value: Any, limit: int = 300) -> str:
    text = "" if is_missing(value) else str(value)
    return f'<td class="t">{esc(text[:limit])}</td>'


def relative_href(run_dir: str, rel: str, out_dir: Path) -> str | None:
    """A link from the report's folder to a run's artefact; None for anything but a plain relative path."""
    parts = urlsplit(rel)
    if parts.scheme or parts.netloc or os.path.isabs(rel) or ".." in Path(rel).parts:
        return None
    return quote(os.path.relpath(Path(run_dir) / rel, out_dir).replace(os.sep, "/"))


def _artifacts(row: Mapping[str, Any], out_dir: Path) -> str:
    links = []
    for name, rel in sorted((row.get("artifacts") or {}).items()):
        href = relative_href(str(row.get("run_dir") or "."), str(rel), out_dir)
        links.append(f'<a href="{esc(href)}">{esc(name)}</a>' if href else esc(f"{name}: {rel}"))
    return f'<td class="t">{" ".join(links)}</td>'


def savings_columns(rows: pd.DataFrame) -> list[Metric]:
    """The catalog's table columns that have a value in at least one of these rows (no empty columns)."""
    return [m for m in metrics.columns() if m.name in rows and rows[m.name].notna().any()]


def _header(metric: Metric, gated: bool) -> str:
    title = esc(metric.definition.replace("`", ""))
    mark = ' <span class="gated" title="the figure the CI gate judges">gated</span>' if gated else ""
    return f'<th title="{title}">{esc(metric.header)}{mark}</th>'


def _metric_td(metric: Metric, row: Mapping[str, Any]) -> str:
    value: Any = row.get(metric.name)
    if metric.name == "quality_delta" and not is_missing(value):
        noise: Any = row.get("quality_noise")
        if not is_missing(noise) and abs(float(value)) <= float(noise):
            why = f"{float(value):+.3g} nats, inside the noise band of +-{float(noise):.2g}"
            return f'<td data-v="{float(value)!r}" title="{esc(why)}">=</td>'
    if metric.kind == "label":
        return _text(value)
    if is_missing(value):
        return '<td data-v="">-</td>'
    mark, detail = cell_mark(metric.name, row)
    if detail:
        return f'<td data-v="{float(value)!r}" title="{esc(detail)}">{esc(metric.show(value))}{mark}</td>'
    return f'<td data-v="{float(value)!r}">{esc(metric.show(value))}</td>'


def _note(row: Mapping[str, Any]) -> str:
    return str((row["error"] if row["status"] != "ok" else row["baseline_note"]) or "")


def _saving_tr(row: Mapping[str, Any], columns: Sequence[Metric], out_dir: Path, extra: Sequence[str]) -> str:
    cls = {"ok": "", "unsupported": "skip"}.get(str(row["status"]), "bad")
    cells = [
        _text(row["techniques_name"]),
        _text(row["status"]),
        *(_metric_td(m, row) for m in columns),
        *([_text(_note(row))] if "note" in extra else []),
        *([_artifacts(row, out_dir)] if "artefacts" in extra else []),
    ]
    return f'<tr class="{cls}">{"".join(cells)}</tr>'


def _sources(rows: pd.DataFrame, column: str) -> set[str]:
    return {str(m) for m in rows[column] if not is_missing(m)}


def _column_note(rows: pd.DataFrame, gated: Collection[str]) -> str:
    """Which record figure each memory column shows, and which of them the gate judges."""
    parts = []
    for label, column in (("tensor peak", "tensor_peak_metric"), ("process peak", "process_peak_metric")):
        names = sorted(_sources(rows, column))
        if names:
            shown = " or ".join(f"{prose(metrics.get(n).definition)} (<code>{esc(n)}</code>)" for n in names)
            parts.append(f"<b>{label}</b>: {shown}")
    if any(n in gated for n in _sources(rows, "tensor_peak_metric") | _sources(rows, "process_peak_metric")):
        parts.append("<b>gated</b>: the figure the CI gate judges (results/baselines/policy.yaml)")
    parts.append(
        "ratios are case / baseline (the case with the same definition and no techniques); "
        "a quality change inside its paired 95 % interval (or, without one, its gate's noise band) "
        "shows as <b>=</b>"
    )
    if any(time_ratio_detail(r)[0] for r in records(rows)):
        parts.append(
            f"<b>{DISTURBED_MARK}</b> on a step-time ratio: the case's or its baseline's times were "
            "disturbed by other work on the machine (hover for why, the 95 % interval and the CPU-time "
            "ratio)"
        )
    if any(memory_disturbed(r) for r in records(rows)):
        parts.append(
            f"<b>{DISTURBED_MARK}</b> on a memory figure: {MEMORY_DISTURBED_NOTE} (hover for how much)"
        )
    return "<ul class='note'>" + "".join(f"<li>{p}</li>" for p in parts) + "</ul>"


def savings_tables(saved: pd.DataFrame, out_dir: Path, gated: Collection[str] = ()) -> str:
    """One sortable table per model x workload, columns and units from the metric catalog."""
    parts = []
    notes = {_column_note(rows, gated) for _, rows in groups(saved)}
    for label, rows in groups(saved):
        first = rows.iloc[0]
        columns = savings_columns(rows)
        # Text columns only where some row has something to say (no always-empty columns).
        extra = [
            name
            for name, present in (
                ("note", any(_note(r) for r in records(rows))),
                ("artefacts", any(bool(a) for a in rows["artifacts"])),
            )
            if present
        ]
        gated_columns = {
            "tensor_peak_bytes": bool(_sources(rows, "tensor_peak_metric") & set(gated)),
            "process_peak_bytes": bool(_sources(rows, "process_peak_metric") & set(gated)),
        }
        head = (
            '<th class="t">technique</th><th class="t">status</th>'
            + "".join(_header(m, gated_columns.get(m.name, False)) for m in columns)
            + "".join(f'<th class="t">{name}</th>' for name in extra)
        )
        body = "".join(_saving_tr(r, columns, out_dir, extra) for r in records(rows))
        shape = f"batch {esc(first['batch_size'])}, seq {esc(first['seq_len'])}, {esc(first['device'])}"
        parts.append(
            f"<h3>{esc(label)} <span class='note'>({shape}, {esc(first['dtype'])})</span></h3>"
            f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + (_column_note(rows, gated) if len(notes) > 1 else "")
        )
    # One explanation for the whole section when every table shows the same figures.
    return (notes.pop() if len(notes) == 1 else "") + "".join(parts)


ENV_LABELS = {
    "commit": "git commit",
    "dirty": "uncommitted changes",
    "started_at": "started",
    "harness": "harness version",
    "torch": "torch version",
    "python": "python version",
    "cpu_model": "CPU",
    "cpu_count": "CPU cores",
    "gpu_name": "GPU",
    "gpu_driver": "GPU driver",
    "host": "host",
}


def _present(value: Any) -> bool:
    return not is_missing(value) and value not in ("", [], {})


def provenance(manifests: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Per run: the environment at a glance, and the whole manifest folded away."""
    parts = []
    for run_id, manifest in manifests:
        env = "".join(
            f'<tr><th class="t">{esc(ENV_LABELS.get(k, k))}</th><td class="t">{esc(_shown(v))}</td></tr>'
            for k, v in run_env(manifest).items()
            if _present(v)
        )
        full = "".join(
            f'<tr><th class="t">{esc(k)}</th><td class="t">{esc(v)}</td></tr>'
            for k, v in flatten(manifest).items()
            if _present(v)
        )
        parts.append(
            f"<h3>run {esc(run_id)}</h3><table>{env}</table>"
            f"<details><summary>full manifest</summary><table>{full}</table></details>"
        )
    return "".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def figure_divs(figures: Sequence[Titled]) -> str:
    return "".join(
        f'<div class="plot"><h3>{esc(title)}</h3>'
        f"{fig.to_html(full_html=False, include_plotlyjs=False, config={'responsive': True})}</div>"
        for title, fig in figures
    )


def render_page(
    *,
    title: str,
    summary: str,
    sections: Sequence[tuple[str, str]],
    figure_count: int,
    plotly_src: str,
) -> str:
    """The page: error trap, plotly.js (the shared bundle beside the page), the sections' HTML, the sort
    and render-check scripts."""
    body = "".join(
        f"<section><h2>{esc(name)}</h2>{content}</section>" for name, content in sections if content
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style>"
        f'<script>{ERROR_TRAP}</script><script src="{esc(plotly_src)}"></script></head><body>'
        f"<h1>{esc(title)}</h1><p>{esc(summary)}</p>"
        f'<p id="{RENDER_STATUS_ID}" class="note" data-expected="{figure_count}"></p>'
        f"{body}<script>{SORT_JS}</script><script>{RENDER_CHECK_JS.replace('PLOTLY_SRC', esc(plotly_src))}"
        "</script></body></html>"
    )
