"""The report pipeline on hand-made records: results -> tidy table -> figures -> one HTML page / md / csv."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.offline
import pytest

from harness.case import baseline_key
from harness.errors import HarnessError
from harness.metrics.record import flatten
from harness.report import build_report, report_html
from harness.report.figures import (
    TIMELINE_PHASES,
    breakdown_figures,
    decimate,
    history_figures,
    pareto_figures,
    phase_axis,
    quality_colour,
    timeline_figures,
)
from harness.report.html import relative_href
from harness.report.tidy import DISTURBED_MARK, latest_run, pareto_mask, records, savings, tidy
from harness.results.load import load_results, run_paths
from tests.conftest import run_cli
from tests.fixtures_results import MiB, make_manifest, make_record, make_timeline, smoke_records, write_run


def saved_rows(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    frame = savings(tidy(pd.DataFrame([_flat(r) for r in recs])))
    return {str(r["techniques_name"]): r for r in records(frame)}


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    return {**flatten(record), "run_started_at": "2025-01-01T00:00:00Z", "run_commit": "abc", "run_dir": "."}


def test_load_results_flattens_records_and_adds_run_columns(tmp_path):
    # GIVEN a run on disk  WHEN it is loaded  THEN nested keys are '.'-joined and run provenance is added
    run = write_run(tmp_path, smoke_records())
    frame = load_results(run)
    assert len(frame) == 6
    assert frame["phases.measured.duration_s"].tolist() == [0.5] * 6
    assert set(frame["run_commit"]) == {"abc1234"}
    assert set(frame["run_started_at"]) == {"2025-01-01T00:00:00Z"}
    assert len(load_results([run, run / "results.jsonl"])) == 12


def test_results_root_expands_into_its_runs(tmp_path):
    write_run(tmp_path, smoke_records("run-a"))
    write_run(tmp_path, smoke_records("run-b"))
    assert [p.name for p in run_paths([tmp_path])] == ["run-a", "run-b"]


def test_savings_are_ratios_to_the_baseline_of_the_same_group():
    rows = saved_rows(smoke_records())
    ckpt, base = rows["activation_checkpointing"], rows["baseline"]
    assert ckpt["peak_ratio"] == pytest.approx(250 / 400)
    assert ckpt["step_time_ratio"] == pytest.approx(0.14 / 0.11)  # medians of the step lists
    assert ckpt["peak_metric"] == "host_rss_peak_above_base_bytes"
    assert base["peak_ratio"] == 1.0
    assert rows["autocast_bf16"]["quality_delta"] == pytest.approx(0.01)  # last-step loss 9.01 vs 9.0
    assert rows["autocast_bf16"]["peak_ratio"] == pytest.approx(90 / 120)  # infer against infer's baseline
    assert rows["fsdp"]["status"] == "unsupported"
    assert rows["fsdp"]["peak_ratio"] is None and "something went wrong" in rows["fsdp"]["error"]


def test_quality_prefers_heldout_loss_and_peak_prefers_the_gpu_figure():
    recs = [
        make_record(heldout_loss_nats=3.0, gpu_peak=100 * MiB),
        make_record(techniques=("lora",), heldout_loss_nats=3.25, gpu_peak=60 * MiB),
    ]
    lora = saved_rows(recs)["lora"]
    assert lora["quality_metric"] == "heldout_loss_nats" and lora["quality_delta"] == pytest.approx(0.25)
    assert lora["peak_metric"] == "gpu_peak_allocated_bytes" and lora["peak_ratio"] == pytest.approx(0.6)


def test_no_ratio_between_different_peak_measures():
    # GIVEN a CPU baseline with the tensor peak and a case run with `breakdown: false` (no tensor peak)
    recs = [
        make_record(peak=100 * MiB, breakdown={"tensor_peak_bytes": 80 * MiB}),
        make_record(techniques=("x",), peak=100 * MiB),
    ]
    x = saved_rows(recs)["x"]
    # THEN the process peaks pair, the tensor peak has no ratio, and the headline says why
    assert x["tensor_peak_ratio"] is None and x["process_peak_ratio"] == pytest.approx(1.0)
    assert x["peak_ratio"] is None and x["baseline_note"] == "baseline measured a different peak"


def test_cpu_headline_is_the_tensor_peak_beside_the_process_peak():
    recs = [
        make_record(peak=100 * MiB, breakdown={"tensor_peak_bytes": 80 * MiB}),
        make_record(techniques=("ckpt",), peak=90 * MiB, breakdown={"tensor_peak_bytes": 40 * MiB}),
    ]
    ckpt = saved_rows(recs)["ckpt"]
    assert ckpt["tensor_peak_metric"] == "breakdown.tensor_peak_bytes" and ckpt["tensor_peak_ratio"] == 0.5
    assert ckpt["process_peak_metric"] == "host_rss_peak_above_base_bytes"
    assert ckpt["process_peak_ratio"] == pytest.approx(0.9)
    assert ckpt["peak_metric"] == "breakdown.tensor_peak_bytes"  # the headline: the gated figure


def test_baseline_is_paired_by_spec_not_by_name():
    # GIVEN two baselines that share model and workload names but differ in the model definition
    recs = [
        make_record(peak=100 * MiB),
        make_record(techniques=("ckpt",), peak=50 * MiB),
        make_record(peak=200 * MiB, definition="deeper"),
    ]
    recs[2]["spec"]["model"] = {"d_model": 128}
    frame = savings(tidy(pd.DataFrame([_flat(r) for r in [recs[2], *recs[:2]]])))
    ckpt = next(r for r in records(frame) if r["techniques_name"] == "ckpt")
    assert ckpt["process_peak_ratio"] == pytest.approx(0.5)  # not 0.25: the d_model 128 case is another's


def test_pareto_mask_keeps_only_undominated_points():
    # memory (lower better), speed (higher better)
    assert pareto_mask([400, 250, 330, 420], [9, 7, 11, 8]) == [False, True, True, False]
    assert pareto_mask([1, 1], [5, 5]) == [True, True]  # ties dominate nobody


def test_pareto_figure_draws_the_frontier_and_one_marker_per_ok_case():
    frame = savings(tidy(pd.DataFrame([_flat(r) for r in smoke_records()])))
    figs = dict(pareto_figures(frame))
    train = figs["Pareto: ci / train"]
    frontier, cases = train.data
    assert len(cases.x) == 3  # the unsupported case has no point
    assert list(frontier.x) == [250.0, 330.0]  # checkpointing and SDPA; baseline is dominated by SDPA


def test_decimate_keeps_every_spike():
    t = list(range(10_000))
    y = [0.0] * 10_000
    y[4321] = 99.0
    td, yd = decimate(t, y, 800)
    assert len(td) <= 800 and max(yd) == 99.0 and td == sorted(td)


def test_breakdown_stacks_measured_beside_predicted_and_is_skipped_when_absent():
    assert breakdown_figures(tidy(pd.DataFrame([_flat(r) for r in smoke_records()]))) == []
    rec = make_record(
        breakdown={"parameters_bytes": 10 * MiB, "activations_bytes": 200 * MiB},
        predicted={"parameters_bytes": 10 * MiB, "activations_bytes": 180 * MiB},
    )
    (_title, fig), *rest = breakdown_figures(tidy(pd.DataFrame([_flat(rec)])))
    assert not rest
    assert [t.name for t in fig.data] == ["parameters", "activations"]
    assert list(fig.data[1].x[1]) == ["measured", "predicted"]
    assert list(fig.data[1].y) == [200.0, 180.0]


def test_history_orders_runs_by_start_time(tmp_path):
    late = write_run(
        tmp_path, smoke_records("run-late"), make_manifest("run-late", "c2", "2025-02-01T00:00:00Z")
    )
    early = write_run(
        tmp_path, smoke_records("run-early"), make_manifest("run-early", "c1", "2025-01-01T00:00:00Z")
    )
    frame = tidy(load_results([late, early]))
    figs = history_figures(frame)
    # no tensor peak in these records: that chart is left out rather than drawn empty
    assert [t for t, _ in figs] == ["History: process peak", "History: step time median", "History: quality"]
    assert list(figs[0][1].layout.xaxis.categoryarray) == [
        "c1 2025-01-01T00:00:00Z",
        "c2 2025-02-01T00:00:00Z",
    ]
    assert latest_run(frame)["run_id"].iloc[0] == "run-late"
    assert history_figures(tidy(load_results([early]))) == []


def test_history_keeps_cases_that_share_a_name_apart(tmp_path):
    # GIVEN the same case name with two definitions across runs (the model changed between runs)
    a = [
        make_record(run_id="run-a", peak=100 * MiB),
        make_record(run_id="run-a", definition="v1", peak=300 * MiB),
    ]
    b = [make_record(run_id="run-b", peak=110 * MiB)]
    runs = [
        write_run(tmp_path, a, make_manifest("run-a", "c1", "2025-01-01T00:00:00Z")),
        write_run(tmp_path, b, make_manifest("run-b", "c2", "2025-01-02T00:00:00Z")),
    ]
    (_, fig), *_ = history_figures(tidy(load_results(runs)))
    # THEN two lines, told apart by their ids, and the 300 MiB case is not joined to the 110 MiB one
    assert len(fig.data) == 2
    assert all("[" in t.name for t in fig.data)
    lines = {tuple(t.y) for t in fig.data}
    assert lines == {(100.0, 110.0), (300.0,)}


def test_html_shares_one_local_plotly_bundle_and_escapes_user_strings(tmp_path):
    recs = smoke_records()
    recs[2]["case_name"] = "ci/train/<script>alert(1)</script>"
    recs[2]["techniques_name"] = "<script>alert(2)</script>"
    recs[3]["error"] = "unsupported: needs <b>CUDA</b>"
    run = write_run(tmp_path / "results", recs)
    out = build_report([run], tmp_path / "report.html", "html")
    text = out.read_text()
    # plotly.js once, beside the page (offline), shared by every report written to that folder
    (src,) = re.findall(r'<script src="([^"]+)"', text)
    assert (tmp_path / src).read_text() == plotly.offline.get_plotlyjs()
    assert "cdn.plot.ly" not in text and "https://" not in text
    assert len(text.encode()) < 2 * MiB
    build_report([run], tmp_path / "again.html", "html")
    assert sorted(p.name for p in tmp_path.glob("*.js")) == [src]
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert "needs &lt;b&gt;CUDA&lt;/b&gt;" in text
    assert 'data-expected="4"' in text  # 2 pareto + 2 timeline figures, no breakdown, no history


def test_report_renders_without_optional_fields(tmp_path):
    # no timelines, no GPU, no breakdown, failed and unsupported cases
    recs = [
        make_record(),
        make_record(techniques=("a",), status="oom"),
        make_record(techniques=("b",), status="unsupported"),
    ]
    for rec in recs:
        for key in ("artifacts", "timeline_file", "gpu_peak_allocated_bytes", "loss"):
            rec.pop(key)
    frame = tidy(load_results(write_run(tmp_path, recs, timelines=False)))
    text = report_html(frame, [("run-a", {})], {}, tmp_path, plotly_src="plotly.js")
    assert "Memory timelines" not in text and "Memory breakdown" not in text and "History" not in text
    assert text.count('<tr class="bad">') == 1 and text.count('<tr class="skip">') == 1
    assert 'data-expected="1"' in text  # the baseline alone still gets its Pareto point


def test_artifact_links_are_relative_and_only_for_plain_paths(tmp_path):
    assert relative_href(str(tmp_path / "results/run-a"), "cases/x/flame.html", tmp_path) == (
        "results/run-a/cases/x/flame.html"
    )
    assert relative_href(".", "javascript:alert(1)", tmp_path) is None
    assert relative_href(".", "../../etc/passwd", tmp_path) is None
    rec = make_record(artifacts={"flame graph": "cases/x/flame.html"})
    run = write_run(tmp_path / "results", [rec])
    text = build_report([run], tmp_path, "html").read_text()
    assert '<a href="results/run-a/cases/x/flame.html">flame graph</a>' in text


def test_markdown_summary_is_a_table_per_group_with_escaped_cells(tmp_path):
    recs = smoke_records()
    recs[3]["error"] = "needs a | pipe and <html>"
    out = build_report([write_run(tmp_path, recs)], tmp_path / "summary.md", "md").read_text()
    assert out.count("### ") == 2
    assert "| activation_checkpointing | ok | 250.0 | 0.62 | 52.1 |" not in out  # no tensor peak column: none
    assert (
        "| technique | status | process peak, MiB | process peak / baseline | step time median, ms |" in out
    )
    assert "| activation_checkpointing | ok | 250.0 | 0.62 | 140.0 | 1.27 | 7,314 | = |  |" in out
    assert (
        "| autocast_bf16 | ok | 90.0 | 0.75 | 110.0 | 1.00 | 9,309 | +0.01 |" in out
    )  # infer: no note column
    assert "needs a \\| pipe and &lt;html&gt;" in out
    assert "6 cases: 5 ok, 1 unsupported." in out


def test_csv_export_round_trips_and_parquet_needs_pyarrow(tmp_path):
    run = write_run(tmp_path, smoke_records())
    csv = build_report([run], tmp_path / "t.csv", "csv")
    back = pd.read_csv(csv)
    assert len(back) == 6 and back["peak_bytes"].dropna().max() == 400 * MiB
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(HarnessError, match="pyarrow"):
            build_report([run], tmp_path / "t.parquet", "parquet")
    with pytest.raises(HarnessError, match="unknown report format"):
        build_report([run], tmp_path / "t.x", "xlsx")


def test_empty_or_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(HarnessError) as err:
        build_report([tmp_path / "nope"], tmp_path / "r.html", "html")
    assert err.value.exit_code == 2


def test_sixty_case_report_stays_under_ten_megabytes(tmp_path):
    recs = [
        make_record(
            f"m{m}", f"w{w}", (f"t{t}",) if t else (), peak=(100 + 10 * t) * MiB, step_times=[0.1] * 30
        )
        for m in range(3)
        for w in range(4)
        for t in range(5)
    ]
    assert len(recs) == 60
    run = write_run(tmp_path, recs, n_samples=3000)  # a minute of samples at 20 ms per case
    out = build_report([run], tmp_path / "r.html", "html")
    size = out.stat().st_size
    assert size < 10 * 1024 * 1024, size
    assert json.loads((run / recs[0]["timeline_file"]).read_text())["t_s"][-1] == pytest.approx(59.98)


def test_report_of_a_results_root_includes_history(tmp_path):
    write_run(tmp_path, smoke_records("run-a"), make_manifest("run-a", "c1", "2025-01-01T00:00:00Z"))
    write_run(tmp_path, smoke_records("run-b"), make_manifest("run-b", "c2", "2025-01-02T00:00:00Z"))
    text = build_report([tmp_path], tmp_path / "out" / "r.html", "html").read_text()
    assert "<h2>History</h2>" in text and 'data-expected="7"' in text  # 2 Pareto, 2 timelines, 3 history
    assert "<title>harness report: suite smoke, run run-b</title>" in text
    assert "history over 2 runs: run-a, run-b" in text
    assert Path(tmp_path / "out" / "r.html").is_file()


# ---- what the page shows (issue 13 item 4) ------------------------------------------------------------


def test_nested_and_flattened_specs_pair_with_the_same_baseline_key():
    spec = make_record(techniques=("ckpt",))["spec"]
    base = make_record()["spec"]
    assert baseline_key(spec) == baseline_key(base)  # the techniques differ, nothing else
    assert baseline_key(spec) == baseline_key(flatten(spec))  # tidy reads flattened `spec.*` columns
    assert baseline_key({**base, "seq_len": 64}) != baseline_key(base)


def test_timelines_start_at_each_cases_base_and_align_at_phase_marks():
    # GIVEN two cases whose phases last different times and whose bases differ by 100 MiB
    fast, slow = make_timeline(50 * MiB), make_timeline(80 * MiB, n=400, base=340 * MiB)
    assert fast["phases"][1]["t_start_s"] != slow["phases"][1]["t_start_s"]
    recs = [
        make_record(peak=50 * MiB, host_rss_base_bytes=240 * MiB),
        make_record(techniques=("x",), peak=80 * MiB, host_rss_base_bytes=340 * MiB),
    ]
    rows = records(tidy(pd.DataFrame([_flat(r) for r in recs])))
    timelines = {(r["run_id"], r["case_id"]): tl for r, tl in zip(rows, (fast, slow), strict=True)}
    ((_title, fig),) = timeline_figures(tidy(pd.DataFrame([_flat(r) for r in recs])), timelines)
    # THEN both start at 0 MiB (their own base) and peak at their own growth; the x axis is in phases
    for trace, peak in zip(fig.data, (50, 80), strict=True):
        assert min(trace.y) == pytest.approx(0.0, abs=0.01) and max(trace.y) == pytest.approx(peak, abs=0.5)
        assert min(trace.x) == 0.0 and max(trace.x) == pytest.approx(len(TIMELINE_PHASES))
    # each case's own phase boundaries map to the same x: 1.0 is the start of warm-up for both
    for tl in (fast, slow):
        t_warmup = tl["phases"][1]["t_start_s"]
        keep, xs = phase_axis(tl["t_s"], tl["phases"])
        i = min(range(len(keep)), key=lambda j: abs(tl["t_s"][keep[j]] - t_warmup))
        assert xs[i] == pytest.approx(1.0, abs=0.02)
    # one shaded band per phase, labelled once on the axis: nothing overprints
    assert len(fig.layout.shapes) == len(TIMELINE_PHASES) and not fig.layout.annotations
    assert list(fig.layout.xaxis.ticktext) == list(TIMELINE_PHASES)


def test_quality_colour_is_neutral_inside_the_noise_band():
    assert quality_colour(2e-5, 1e-3) == 0.0 and quality_colour(-2e-5, 1e-3) == 0.0
    assert quality_colour(0.05, 1e-3) == 0.05 and quality_colour(None, None) == 0.0
    recs = [make_record(heldout_loss_nats=4.5), make_record(techniques=("x",), heldout_loss_nats=4.50002)]
    ((_title, fig),) = pareto_figures(savings(tidy(pd.DataFrame([_flat(r) for r in recs]))))
    marker = fig.data[1].marker
    assert list(marker.color) == [0.0, 0.0] and "nats" in marker.colorbar.title.text


def test_tables_show_the_gated_figure_exactness_and_kl_with_units_and_no_empty_or_debug_text(tmp_path):
    recs = smoke_records()
    recs[0]["breakdown"] = {"tensor_peak_bytes": 300 * MiB}
    recs[1].update(breakdown={"tensor_peak_bytes": 150 * MiB}, exactness="ok")
    recs[4]["kl_divergence_nats"] = 0.0
    recs[5]["kl_divergence_nats"] = 1.2e-5
    run = write_run(tmp_path / "results", recs)
    text = build_report([run], tmp_path / "r.html", "html").read_text()
    train, infer = text.split("<h3>ci / train")[1], text.split("<h3>ci / infer")[1].split("<h3>")[0]
    assert "tensor peak, MiB" in train and '<span class="gated"' in train  # policy.yaml gates it
    assert ">exactness<" in train and ">ok<" in train
    assert "KL vs reference, nats" in infer and "KL vs reference" not in train.split("<h3>")[0]
    assert ">exactness<" not in infer  # no row has one: no empty column
    shown = text.split("<details>")[0]  # the raw manifest is folded away under "full manifest"
    assert "plots rendered" not in text and "gpu_name" not in shown and ">[]<" not in text
    for raw in ("peak_bytes</th>", "techniques_name", "step_time_s_median</th>"):
        assert raw not in text
    headers = re.findall(r"<th[^>]*>([^<]*)", text.split("Savings against baseline")[1].split("<h2>")[0])
    numeric = [h for h in headers if h and h not in ("technique", "status", "note", "exactness")]
    assert numeric and all("," in h or "/ baseline" in h for h in numeric), numeric  # unit or ratio


def test_the_policy_decides_which_figure_is_marked_gated(tmp_path):
    recs = smoke_records()
    recs[0]["breakdown"] = {"tensor_peak_bytes": 300 * MiB}
    run = write_run(tmp_path / "results", recs)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nmetrics:\n  breakdown.tensor_peak_bytes: {gate: false}\n")
    proc = run_cli("report", str(run), "-o", str(tmp_path / "r.html"), "--policy", str(policy))
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "r.html").read_text().split("<h3>ci / train")[1].split("</thead>")[0]
    # the process peak is gated by the defaults; the tensor peak no longer
    assert re.search(r"process peak, MiB <span class=\"gated\"", table)
    assert not re.search(r"tensor peak, MiB <span class=\"gated\"", table)


def test_every_smoke_case_finds_its_baseline_by_the_case_property():
    from harness.suite.load import load_suite
    from tests.conftest import ROOT

    cases = load_suite(ROOT / "suites" / "smoke.yaml").cases
    baselines = {c.baseline_key: c for c in cases if not c.techniques}
    assert len(baselines) == 3  # ci/train, ci/infer, ci-deep/train-long
    for case in cases:
        base = baselines[case.baseline_key]
        assert (base.model_name, base.workload_name) == (case.model_name, case.workload_name)
        # the same key the runner's exactness check and the report compute from the record's spec
        assert baseline_key(case.model_dump(mode="json")) == case.baseline_key


def test_a_paired_quality_difference_inside_its_interval_reads_as_no_change():
    from harness.report.tidy import quality_cell, savings, tidy

    records = smoke_records()
    records[1].update(quality_delta_nats=0.031, quality_change="no measurable change")
    records[2].update(quality_delta_nats=0.052, quality_change="higher")
    frame = savings(tidy(pd.DataFrame(records)))
    rows = {r["techniques_name"]: r for r in frame.to_dict("records")}
    ckpt, sdpa = rows["activation_checkpointing"], rows["sdpa_attention"]
    assert quality_cell(ckpt["quality_delta"], ckpt["quality_noise"]) == "="  # inside its interval
    assert quality_cell(sdpa["quality_delta"], sdpa["quality_noise"]) != "="
    assert sdpa["quality_delta"] == pytest.approx(0.052)


def test_no_ratio_between_cases_that_differ_in_more_than_the_technique():
    from harness.report.tidy import savings, tidy

    records = smoke_records()
    records[1].update(baseline_ratios_comparable=False, baseline_ratio_null_reason="ranks: 2 vs baseline 1")
    rows = {r["techniques_name"]: r for r in savings(tidy(pd.DataFrame(records))).to_dict("records")}
    unlike, like = rows["activation_checkpointing"], rows["sdpa_attention"]
    assert unlike["peak_ratio"] is None and unlike["step_time_ratio"] is None
    assert unlike["baseline_note"] == "ranks: 2 vs baseline 1"
    assert like["peak_ratio"] == pytest.approx(330 / 400)


def test_a_negligible_measurable_quality_change_stays_pale_on_the_pareto_scale():
    records = smoke_records()
    records[2].update(quality_delta_nats=0.0002, quality_change="higher")  # real, but negligible
    frame = savings(tidy(pd.DataFrame([_flat(r) for r in records])))
    _, cases = dict(pareto_figures(frame))["Pareto: ci / train"].data
    assert cases.marker.cmax == pytest.approx(0.05) and cases.marker.cmin == pytest.approx(-0.05)
    assert max(abs(c) for c in cases.marker.color) == pytest.approx(0.0002)  # 0.4 % of the half-scale


def test_groups_name_their_node_when_cases_ran_on_several_machines(tmp_path):
    """A cluster run: step times of different machines are not comparable, so each group says where it
    ran; a single-machine run keeps its plain headings."""
    recs = smoke_records()
    single = build_report([write_run(tmp_path / "one", recs)], tmp_path / "one.md", "md").read_text()
    assert "node" not in "".join(line for line in single.splitlines() if line.startswith("### "))
    for r in recs:
        r["node"] = {"host": "gpu-a" if r["workload_name"] == "train" else "gpu-b"}
    out = build_report([write_run(tmp_path / "two", recs)], tmp_path / "two.md", "md").read_text()
    headings = [line for line in out.splitlines() if line.startswith("### ")]
    assert headings == ["### ci / infer · node gpu-b", "### ci / train · node gpu-a"], headings


def test_a_disturbed_step_time_ratio_is_marked_with_why_and_its_interval(tmp_path):
    """A ratio measured while other work ran on the machine reads `1.27~`, hover says why, with the 95 %
    interval and the CPU-time ratio to read instead; an undisturbed one has no mark."""
    recs = smoke_records()
    ckpt, sdpa = recs[1], recs[2]
    ckpt.update(
        step_time_vs_baseline_disturbed=True,
        step_time_disturbed_reason="other work beside it: CPU pressure 52% of the timing pass > 10%",
        step_time_vs_baseline_ci95_low_ratio=1.2,
        step_time_vs_baseline_ci95_high_ratio=1.4,
        step_cpu_time_vs_baseline_ratio=1.05,
    )
    sdpa.update(step_time_vs_baseline_disturbed=False)
    run = write_run(tmp_path, recs)
    page = build_report([run], tmp_path / "r.html", "html").read_text()
    cell = re.search(r'<td data-v="[^"]*" title="([^"]*)">1\.27~</td>', page)
    assert cell is not None, "the disturbed ratio carries its mark and explanation"
    why = cell.group(1)
    assert "CPU pressure 52%" in why and "1.20-1.40" in why and "CPU-time ratio 1.05" in why
    assert page.count(f"{DISTURBED_MARK}</td>") == 1  # sdpa's undisturbed ratio has no mark
    assert "disturbed by other work on the machine" in page
    md = build_report([run], tmp_path / "r.md", "md").read_text()
    assert "| 1.27~ |" in md and "step times disturbed by other work" in md


def test_a_baseline_measured_under_memory_pressure_marks_every_host_ratio_against_it(tmp_path):
    """A baseline whose host figures the kernel lowered (host_memory_disturbed) makes every host ratio
    against it doubtful: the cells carry `~`, the hover names whose figure and how much."""
    recs = smoke_records()
    why = "the kernel reclaimed 3.0 MiB of the case's file-backed pages in build (memory pressure ...)"
    base = next(r for r in recs if r["techniques_name"] == "baseline" and r["workload_name"] == "train")
    base.update(host_memory_disturbed=True, host_memory_disturbed_reason=why)
    run = write_run(tmp_path, recs)
    page = build_report([run], tmp_path / "r.html", "html").read_text()
    marked = re.findall(r'<td data-v="[^"]*" title="disturbed: ([^"]*)">[^<]*~</td>', page)
    train = [r for r in recs if r["workload_name"] == "train" and r["status"] == "ok"]
    with_ratio = [r for r in train if r is not base and r.get("host_rss_peak_above_base_bytes") is not None]
    # the baseline's own figure and its 1.00 ratio, and each other case's ratio against it
    assert len(marked) == 2 + len(with_ratio), marked
    assert all("reclaimed 3.0 MiB" in m for m in marked)
    assert any(m.startswith("baseline: ") for m in marked)
    assert "on a memory figure: host memory read low" in page
    md = build_report([run], tmp_path / "r.md", "md").read_text()
    assert "`~` on a memory figure: host memory read low" in md


def test_the_same_run_named_twice_counts_once(tmp_path):
    run = write_run(tmp_path / "root", smoke_records())
    once = build_report([run], tmp_path / "once.csv", "csv").read_text().splitlines()
    twice = build_report([run, run / "results.jsonl", tmp_path / "root"], tmp_path / "twice.csv", "csv")
    assert twice.read_text().splitlines() == once


def test_a_multi_rank_case_is_named_not_drawn_on_another_figure_s_axis():
    """zero1/fsdp2 have no tensor peak, only their ranks' RSS: plotted on the tensor-peak axis they sat
    at 85 MiB among 2-4 MiB points, and their timeline was the launcher's flat line. Both are named
    under the charts instead."""
    scope = "max over ranks (each rank's own VmHWM); launcher_* is the case process"
    recs = [
        make_record(peak=50 * MiB, breakdown={"tensor_peak_bytes": 4 * MiB}, tokens_per_s=100.0),
        make_record(
            techniques=("x",), peak=40 * MiB, breakdown={"tensor_peak_bytes": 3 * MiB}, tokens_per_s=90.0
        ),
        make_record(techniques=("zero1",), peak=85 * MiB, host_memory_scope=scope, tokens_per_s=80.0),
    ]
    frame = tidy(pd.DataFrame([_flat(r) for r in recs]))
    ((_title, fig),) = pareto_figures(savings(frame))
    drawn = [x for trace in fig.data for x in (trace.x or [])]
    assert max(drawn) < 5  # MiB: tensor peaks only
    assert (
        "not drawn (their peak is another figure than this axis'): zero1" in fig.layout.annotations[-1].text
    )
    rows = records(frame)
    timelines = {(r["run_id"], r["case_id"]): make_timeline(10 * MiB) for r in rows}
    ((_title, tl),) = timeline_figures(frame, timelines)
    assert [t.name for t in tl.data] == ["baseline", "x"]
    assert (
        "multi-rank: the sampler sees the launcher, not the ranks): zero1" in tl.layout.annotations[-1].text
    )


def test_a_generate_case_without_the_quality_pass_has_no_quality_change():
    """Its step loss is the NLL of its own greedy tokens: MQA read -0.16 nats, an 'improvement' from a
    lossy change. Without held-out loss or KL the column stays empty; a train case keeps its final loss."""
    recs = [
        make_record(workload="gen", loss=[3.0, 2.9], workload_kind="generate"),
        make_record(workload="gen", techniques=("mqa",), loss=[2.8, 2.74], workload_kind="generate"),
        make_record(loss=[3.0, 2.9]),
        make_record(techniques=("x",), loss=[3.0, 2.95]),
    ]
    saved = savings(tidy(pd.DataFrame([_flat(r) for r in recs])))
    by = {(r["workload_name"], r["techniques_name"]): r for r in records(saved)}
    assert by[("gen", "mqa")]["quality_delta"] is None and by[("gen", "mqa")]["quality_metric"] is None
    assert by[("train", "x")]["quality_metric"] == "final_loss"
    assert by[("train", "x")]["quality_delta"] == pytest.approx(0.05)
