"""The fits-on page of a `harness fit` run, from hand-made fit.jsonl files (no case processes): the heat
map beside the Pareto chart, the front, the cells the chart leaves out, escaping, and the CLI's exits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import plotly
import pytest

from harness.cli import main
from harness.fit.view import DOES_NOT_FIT
from harness.report import build_report
from tests.fixtures_fit import CELLS, FRONT, MiB, fit_lines, page_figures, write_fit_run
from tests.fixtures_results import smoke_records, write_run


@pytest.fixture
def page(tmp_path: Path) -> str:
    run = write_fit_run(tmp_path / "fit-run", fit_lines(CELLS))
    return build_report([run], tmp_path / "fit.html", "html").read_text()


Fig = dict[str, Any]


def _traces(page: str) -> tuple[dict[str, Fig], dict[str, Fig], Fig, Fig]:
    (heat, heat_layout), (pareto, pareto_layout) = page_figures(page)
    return {t["name"]: t for t in heat}, {t["name"]: t for t in pareto}, heat_layout, pareto_layout


def test_heat_map_and_pareto_chart_sit_side_by_side_in_one_row(page):
    heat, pareto, _, _ = _traces(page)
    assert [t["type"] for t in heat.values()] == ["heatmap"] * 3  # fits, does not fit at 1, no answer
    assert {"Pareto front", "under 200MiB", "under host"} <= set(pareto)
    assert 'data-expected="2"' in page
    # both plot divs inside one grid row of two auto-filled columns (one column when narrow)
    row = page[page.index("display:grid") :]
    assert (
        row.index("Fits on: the largest batch_size") < row.index("Memory vs throughput") < row.index("Table")
    )
    assert "repeat(auto-fill,minmax(min(540px,100%),1fr))" in page


def test_the_front_is_exactly_the_non_dominated_points(page):
    _, pareto, _, _ = _traces(page)
    front = pareto["Pareto front"]
    assert sorted(zip(front["x"], front["y"], strict=True)) == FRONT  # whole MiB: exact in binary
    # every plotted point: the four 200MiB answers and baseline@host; dominated m/w/slow is off the front
    points = {
        (x, y)
        for n in ("under 200MiB", "under host")
        for x, y in zip(pareto[n]["x"], pareto[n]["y"], strict=True)
    }
    assert points == {(190.0, 400.0), (196.0, 405.0), (150.0, 300.0), (195.0, 200.0), (8000.0, 500.0)}


def test_does_not_fit_at_1_is_a_coloured_cell_and_not_a_point(page):
    heat, pareto, _, _ = _traces(page)
    fits, nothing = heat["fits"], heat[DOES_NOT_FIT]
    rows, cols = fits["y"], fits["x"]
    script_row = rows.index("m/w/&lt;script&gt;alert(1)&lt;/script&gt;")
    one_mib = cols.index("1MiB")
    # the cell is in its own trace, not 0 on the colour scale of the fits
    assert fits["z"][script_row][cols.index("200MiB")] is None
    assert nothing["text"][script_row][cols.index("200MiB")] == DOES_NOT_FIT
    assert [row[one_mib] for row in nothing["text"]] == [DOES_NOT_FIT] * len(rows)
    assert nothing["colorscale"][0][1] != "#440154" and nothing["showscale"] is False
    # host (16.0 GiB) in its label; 2**z is the largest fit
    assert cols == ["200MiB", "host (16.0 GiB)", "1MiB"]
    assert 2 ** fits["z"][rows.index("m/w/ckpt")][0] == pytest.approx(36)
    hovers = [h for n, t in pareto.items() if n.startswith("under ") for h in t["hovertext"]]
    assert len(hovers) == 5 and not any("1MiB" in h or "script" in h for h in hovers)


def test_chart_names_the_peak_has_units_and_lists_what_it_leaves_out(page):
    _, pareto, heat_layout, layout = _traces(page)
    x_title = layout["xaxis"]["title"]["text"]
    assert x_title.startswith("peak memory, MiB: ")
    assert "host RSS above the post-import base" in x_title and "host RSS of the case process" in x_title
    assert layout["yaxis"]["title"]["text"] == "throughput, tokens/s"
    assert heat_layout["xaxis"]["title"]["text"] == "memory budget"
    # budget lines: vertical, at the budget's MiB, named
    line = pareto["budget 200MiB"]
    assert line["x"] == [200.0, 200.0] and "200MiB" in line["text"][1]
    assert pareto["budget host"]["x"][0] == pytest.approx(16 * 1024)
    # the estimate-only answer is listed, not plotted at 0
    assert "<b>no throughput: estimated only</b>: m/w/ckpt @ host: 700" in page
    assert all(y > 0 for n, t in pareto.items() if n.startswith("under ") for y in t["y"])
    assert f"<b>{DOES_NOT_FIT} (nothing to plot)</b>" in page and "1MiB: every combination (5)" in page


def test_page_is_offline_and_escapes_user_strings(page, tmp_path):
    (src,) = re.findall(r'<script src="([^"]+)"', page)
    assert (tmp_path / src).read_text() == plotly.offline.get_plotlyjs()
    assert "https://" not in page and "cdn.plot.ly" not in page
    assert "<script>alert" not in page
    assert "m/w/&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the table and the list, escaped


def test_a_budget_nothing_fits_still_yields_a_page_and_exit_0(tmp_path, capsys):
    nothing = {k: (0, None, None, "run") for k in CELLS}
    run = write_fit_run(tmp_path / "fit-run", fit_lines(nothing))
    assert main(["report", str(run), "-o", str(tmp_path / "fit.html")]) == 0
    page = (tmp_path / "fit.html").read_text()
    heat, pareto, _, layout = _traces(page)
    assert "fits" in heat and all(v is None for row in heat["fits"]["z"] for v in row)
    assert not [n for n in pareto if n.startswith("under ")]  # no marker at all
    assert pareto["Pareto front"]["x"] == []
    assert layout["annotations"][0]["text"] == "no combination has a measured point to plot"


def test_a_fit_run_beside_measurement_runs_keeps_the_fit_page_and_says_so(tmp_path, capsys):
    fit = write_fit_run(tmp_path / "fit-run", fit_lines(CELLS))
    measured = write_run(tmp_path / "results", smoke_records())
    assert main(["report", str(fit), str(measured), "-o", str(tmp_path / "out.html")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("note: the fits-on page shows only the fit run;")
    assert str(measured) in out[0] and out[1] == str(tmp_path / "out.html")
    assert len(page_figures((tmp_path / "out.html").read_text())) == 2
    # the measurement run alone still gets its own report, without a note
    assert main(["report", str(measured), "-o", str(tmp_path / "m.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m.html")


def test_estimated_peaks_are_marked_and_named(tmp_path):
    cells = {("m/w/a", "200MiB"): (5, 120.0, 300.0, "estimate"), ("m/w/b", "200MiB"): (3, 90.0, 100.0, "run")}
    run = write_fit_run(tmp_path / "fit-run", fit_lines(cells))
    _, pareto, _, layout = _traces(build_report([run], tmp_path / "f.html", "html").read_text())
    marks = pareto["under 200MiB"]
    assert marks["marker"]["symbol"] == ["diamond-open", "circle"]
    assert "(estimated: tensor peak)" in marks["hovertext"][0]
    assert "(measured: host RSS above the post-import base)" in marks["hovertext"][1]
    title = layout["xaxis"]["title"]["text"]
    assert title == (
        "peak memory, MiB: tensor peak / host RSS above the post-import base (open diamonds: estimated)"
    )
    # 90 MiB points beside a 1 MiB budget line: a spread over 30x, so a log axis
    assert layout["xaxis"]["type"] == "log" and pareto["budget 1MiB"]["x"] == [1.0, 1.0]


def test_an_estimate_the_real_probe_refuted_is_a_cross_off_the_front(tmp_path):
    lines = fit_lines(
        {("m/w/a", "200MiB"): (5, 120.0, None, "estimate"), ("m/w/b", "200MiB"): (3, 90.0, 100.0, "run")}
    )
    answer = next(x for x in lines if x["record_kind"] == "fit_answer" and x["combination"] == "m/w/a")
    probe = next(x for x in lines if x["record_kind"] == "fit_probe" and x["combination"] == "m/w/a")
    answer.update(verified_by_run=False, tokens_per_s=500.0)
    real = {**probe, "method": "run", "status": "ok", "fits": False, "peak_bytes": 260 * MiB}
    lines.append({**real, "peak_kind": "host_rss_peak_above_base_bytes", "tokens_per_s": 500.0})
    run = write_fit_run(tmp_path / "fit-run", lines)
    page = build_report([run], tmp_path / "f.html", "html").read_text()
    _, pareto, _, layout = _traces(page)
    marks = pareto["under 200MiB"]
    # the real probe's measured peak, not the estimate's 120 MiB; faster than b, yet not on the front
    assert list(zip(marks["x"], marks["y"], marks["marker"]["symbol"], strict=True)) == [
        (260.0, 500.0, "x"),
        (90.0, 100.0, "circle"),
    ]
    assert pareto["Pareto front"]["x"] == [90.0] and pareto["Pareto front"]["y"] == [100.0]
    assert "(real probe: does not fit)" in marks["hovertext"][0]
    assert "crosses: the real probe did not fit" in layout["xaxis"]["title"]["text"]
    assert "<b>off the front (crosses): the real probe at the estimated answer did not fit</b>: m/w/a" in page
