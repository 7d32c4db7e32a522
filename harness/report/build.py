"""`harness report`: runs on disk -> tidy table -> figures -> one HTML page (or md / csv / parquet).

I/O happens only here, at both ends: reading runs and timelines, writing the output. The stages in
between (tidy, figures, html, markdown) are pure functions, tested on hand-made records.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.report import figures as figs
from harness.report import html as page
from harness.report.bundle import write_plotly_bundle
from harness.report.export import export_table
from harness.report.gate import gated_memory_metrics
from harness.report.markdown import summary_markdown
from harness.report.tidy import has_breakdown, latest_run, records, run_order, savings, tidy
from harness.results.load import Run, frame_of_runs, inside_run, read_run, run_paths

FORMATS = {"html": ".html", "md": ".md", "csv": ".csv", "parquet": ".parquet"}
Timelines = Mapping[tuple[str, str], Mapping[str, Any]]


def build_report(paths: Sequence[Path], out: Path, fmt: str = "html", policy: Path | None = None) -> Path:
    """Write the report of the given runs (run directories, results.jsonl files, or a results root).
    `policy`: the compare policy whose gated memory figure the tables mark (default: the committed one)."""
    if fmt not in FORMATS:
        raise HarnessError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    from harness.report.fit import fit_report  # a `harness fit` run gets the fits-on view

    if (fitted := fit_report(paths, out, fmt)) is not None:
        return fitted
    runs = [read_run(p) for p in run_paths(paths)]
    frame = tidy(frame_of_runs(runs))
    if frame.empty:
        raise HarnessError(
            f"no result records in {', '.join(map(str, paths))}; run `harness run SUITE` first"
        )
    target = out / f"report{FORMATS[fmt]}" if out.is_dir() else out
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("csv", "parquet"):
        return export_table(frame, target, fmt)
    gated = gated_memory_metrics(policy, str(latest_run(frame)["suite"].iloc[0]))
    if fmt == "md":
        target.write_text(summary_markdown(savings(latest_run(frame)), gated), encoding="utf-8")
        return target
    timelines = load_timelines(runs, latest_run(frame))
    manifests = [(run.run_id, run.manifest) for run in runs]
    bundle = write_plotly_bundle(target.parent)
    html = report_html(frame, manifests, timelines, target.parent, bundle, gated)
    target.write_text(html, encoding="utf-8")
    return target


def load_timelines(runs: Sequence[Run], frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """Each case's timeline.json, keyed by (run_id, case_id); cases without one are left out."""
    dirs = {run.run_id: run.run_dir for run in runs}
    timelines = {}
    for row in records(frame):
        run_dir = dirs.get(str(row["run_id"]))
        # Only a file inside the run's own directory: a hand-edited timeline_file elsewhere is ignored.
        rel = row.get("timeline_file")
        path = inside_run(run_dir, rel) if run_dir is not None else None
        if path is None and isinstance(rel, str) and rel:
            print(f"note: case {row['case_id']}: timeline_file {rel[:200]!r} is not a file inside its run "
                  f"directory; ignored", file=sys.stderr)  # fmt: skip
        if path is not None:
            try:
                timelines[(str(row["run_id"]), str(row["case_id"]))] = json.loads(
                    path.read_text(encoding="utf-8")
                )
            except (OSError, ValueError, RecursionError):
                continue  # an unreadable timeline leaves its case without a plot, not the report
    return timelines


def report_html(
    frame: pd.DataFrame,
    manifests: Sequence[tuple[str, Mapping[str, Any]]],
    timelines: Timelines,
    out_dir: Path,
    plotly_src: str,
    gated: Collection[str] = (),
) -> str:
    """The whole page from the tidy table; the latest run is detailed, earlier runs feed the history."""
    latest = latest_run(frame)
    saved = savings(latest)
    sections: list[tuple[str, list[figs.Titled]]] = [
        ("Memory vs throughput", figs.pareto_figures(saved)),
        ("Memory timelines", figs.timeline_figures(latest, timelines)),
        ("Memory breakdown", figs.breakdown_figures(latest) if has_breakdown(latest) else []),
        ("History", figs.history_figures(frame)),
    ]
    count = sum(len(f) for _, f in sections)
    runs = run_order(frame)
    summary = (
        f"{len(latest)} cases ({', '.join(f'{n} {s}' for s, n in latest['status'].value_counts().items())})"
        + (f"; history over {len(runs)} runs: {', '.join(runs)}" if len(runs) > 1 else "")
    )
    return page.render_page(
        title=f"harness report: suite {latest['suite'].iloc[0]}, run {runs[-1]}",
        summary=summary,
        sections=[
            ("Savings against baseline", page.savings_tables(saved, out_dir, gated)),
            *[(name, page.figure_divs(f)) for name, f in sections],
            ("Provenance", page.provenance(manifests)),
        ],
        figure_count=count,
        plotly_src=plotly_src,
    )
