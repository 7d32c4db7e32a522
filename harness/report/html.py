"""Tables and figures -> ONE self-contained HTML page (plotly.js inlined once). Pure: returns a string.

Every string that came from a suite, a record or a manifest goes through `esc` (html.escape); the only
raw HTML is this module's own markup and plotly's figure divs.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd

from harness.report.figures import Titled
from harness.report.tidy import groups, is_missing, records
from harness.results.load import flatten, run_env

MiB = 1024 * 1024
RENDER_STATUS_ID = "harness-render-status"

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none}
td.t,th.t{text-align:left}
tr.bad td{background:#fde8e8} tr.skip td{background:#f4f4f4;color:#666}
.note{color:#666;font-size:12px} .plot{margin-bottom:1em}
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
  s.textContent='plots rendered: '+drawn+' of '+expected+errors;
});
""".replace("RENDER_STATUS_ID", RENDER_STATUS_ID)


def esc(value: Any) -> str:
    return "" if is_missing(value) else html.escape(str(value), quote=True)


def _num(value: Any, fmt: str, scale: float = 1.0) -> str:
    """A table cell with the exact value in data-v (for sorting) and a rounded one shown."""
    if is_missing(value):
        return '<td data-v="">-</td>'
    number = float(value)
    return f'<td data-v="{number!r}">{format(number / scale, fmt)}</td>'


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


SAVINGS_HEADER = [
    ("techniques", "t"),
    ("status", "t"),
    ("peak MiB", ""),
    ("peak ratio", ""),
    ("peak measured as", "t"),
    ("step time median s", ""),
    ("step time ratio", ""),
    ("tokens/s", ""),
    ("quality delta", ""),
    ("quality from", "t"),
    ("reason / note", "t"),
    ("artefacts", "t"),
]


def _saving_tr(row: Mapping[str, Any], out_dir: Path) -> str:
    cls = {"ok": "", "unsupported": "skip"}.get(str(row["status"]), "bad")
    cells = [
        _text(row["techniques_name"]),
        _text(row["status"]),
        _num(row["peak_bytes"], ".1f", MiB),
        _num(row["peak_ratio"], ".3f"),
        _text(row["peak_metric"]),
        _num(row["step_time_s_median"], ".4f"),
        _num(row["step_time_ratio"], ".3f"),
        _num(row["tokens_per_s"], ".0f"),
        _num(row["quality_delta"], "+.4g"),
        _text(row["quality_metric"]),
        _text(row["error"] if row["status"] != "ok" else row["baseline_note"]),
        _artifacts(row, out_dir),
    ]
    return f'<tr class="{cls}">{"".join(cells)}</tr>'


def savings_tables(saved: pd.DataFrame, out_dir: Path) -> str:
    """One sortable table per model x workload; click a header to sort."""
    head = "".join(f'<th class="{c}">{esc(h)}</th>' for h, c in SAVINGS_HEADER)
    parts = []
    for label, rows in groups(saved):
        first = rows.iloc[0]
        shape = f"batch {esc(first['batch_size'])}, seq {esc(first['seq_len'])}, {esc(first['device'])}"
        body = "".join(_saving_tr(r, out_dir) for r in records(rows))
        parts.append(
            f"<h3>{esc(label)}</h3><p class='note'>{shape}; ratios are case / baseline of the same model, "
            f"workload, batch, sequence length, device and dtype.</p>"
            f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        )
    return "".join(parts)


def provenance(manifests: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Per run: the environment at a glance, and the whole manifest folded away."""
    parts = []
    for run_id, manifest in manifests:
        env = "".join(
            f'<tr><th class="t">{esc(k)}</th><td class="t">{esc(v)}</td></tr>'
            for k, v in run_env(manifest).items()
        )
        full = "".join(
            f'<tr><th class="t">{esc(k)}</th><td class="t">{esc(v)}</td></tr>'
            for k, v in flatten(manifest).items()
        )
        parts.append(
            f"<h3>run {esc(run_id)}</h3><table>{env}</table>"
            f"<details><summary>full manifest</summary><table>{full}</table></details>"
        )
    return "".join(parts)


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
    plotly_js: str,
) -> str:
    """The page: error trap, plotly.js (once), the sections' HTML, the sort and render-check scripts."""
    body = "".join(
        f"<section><h2>{esc(name)}</h2>{content}</section>" for name, content in sections if content
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style>"
        f"<script>{ERROR_TRAP}</script><script type='text/javascript'>{plotly_js}</script></head><body>"
        f"<h1>{esc(title)}</h1><p>{esc(summary)}</p>"
        f'<p id="{RENDER_STATUS_ID}" class="note" data-expected="{figure_count}"></p>'
        f"{body}<script>{SORT_JS}</script><script>{RENDER_CHECK_JS}</script></body></html>"
    )
