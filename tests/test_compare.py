"""The regression gate on hand-made runs: verdicts per case x metric, exit codes, and what CI reads."""

from __future__ import annotations

import io
import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.compare import Comparison, compare_snapshots, run_compare
from harness.compare import stats as st
from harness.compare.outputs import to_junit, to_markdown
from harness.compare.policy import PolicyFile, load_policy
from harness.compare.snapshot import Snapshot, read_baseline, snapshot_of_run
from harness.errors import HarnessError
from harness.results.load import Run
from tests.fixtures_results import MiB, make_manifest, make_record, smoke_records, write_run

MEM = "host_rss_peak_above_base_bytes"
NAMES = list(PolicyFile().for_suite(None))


@pytest.fixture(autouse=True)
def _away_from_the_committed_policy(tmp_path, monkeypatch):
    """run_compare without --policy reads results/baselines/policy.yaml from the working directory;
    these tests judge the built-in defaults, so they run where there is none."""
    monkeypatch.chdir(tmp_path)


def snap(records: list[dict[str, Any]], **manifest: Any) -> Snapshot:
    run_id = records[0]["run_id"] if records else "run"
    return snapshot_of_run(Run(Path(run_id), run_id, make_manifest(run_id, **manifest), records), NAMES)


def judge(
    base: list[dict[str, Any]],
    cur: list[dict[str, Any]],
    policy: PolicyFile | None = None,
    allow_env_change: bool = False,
) -> Comparison:
    return compare_snapshots(snap(base), snap(cur), policy or PolicyFile(), allow_env_change=allow_env_change)


def statuses(comparison: Comparison, metric: str | None = None) -> list[tuple[str, str, str]]:
    return sorted(
        (v.case_name, v.metric, v.status) for v in comparison.verdicts if metric in (None, v.metric)
    )


def noisy(records: list[dict[str, Any]], rng: random.Random, rel: float) -> list[dict[str, Any]]:
    """The same run measured again: every memory figure moved by up to +-rel."""
    out = []
    for rec in records:
        rec = dict(rec, run_id="run-b")
        if rec[MEM] is not None:
            rec[MEM] = int(rec[MEM] * (1 + rng.uniform(-rel, rel)))
        out.append(rec)
    return out


def test_tolerance_and_delta_boundaries_are_exact():
    assert st.tolerance(100 * MiB, MiB, 0.005) == MiB  # the 1 MiB floor wins below 200 MiB
    assert st.tolerance(400 * MiB, MiB, 0.005) == pytest.approx(2 * MiB)
    assert st.judge_delta(100, 111, 10) == st.REGRESSED
    assert st.judge_delta(100, 110, 10) == st.UNCHANGED  # exactly at the tolerance is still noise
    assert st.judge_delta(100, 89, 10) == st.IMPROVED


def test_bootstrap_interval_is_reproducible_and_brackets_the_ratio():
    base, cur = [1.0, 1.1, 0.9, 1.05, 0.95], [1.3, 1.2, 1.25, 1.35, 1.28]
    a = st.median_ratio_interval(base, cur, confidence=0.95, resamples=2000, seed=0)
    b = st.median_ratio_interval(base, cur, confidence=0.95, resamples=2000, seed=0)
    assert a == b
    assert a.ratio == pytest.approx(1.28) and a.low <= a.ratio <= a.high
    assert st.judge_ratio(a, 0.05) == st.REGRESSED


def test_twenty_aa_runs_with_rss_noise_raise_no_memory_alarm():
    rng = random.Random(1234)
    base = smoke_records()
    for _ in range(20):
        comparison = judge(base, noisy(base, rng, 0.003))
        memory = [v for v in comparison.verdicts if v.kind == "memory"]
        assert len(memory) == 5  # every ok case judged, the unsupported one is a status verdict
        assert [v.status for v in memory if v.status != "unchanged"] == []
        assert comparison.exit_code == 0


def test_one_percent_more_peak_memory_is_caught_every_time():
    rng = random.Random(99)
    base = smoke_records()  # the baseline case peaks at 400 MiB
    for _ in range(20):
        cur = noisy(base, rng, 0.003)
        cur[0][MEM] = int(base[0][MEM] * 1.01)
        comparison = judge(base, cur)
        regressed = [(v.case_name, v.metric) for v in comparison.verdicts if v.status == "regressed"]
        assert regressed == [("ci/train/baseline", MEM)]
        assert comparison.exit_code == 1


def test_small_peaks_are_judged_against_the_one_mib_floor():
    base = [make_record(peak=200 * MiB), make_record("small", peak=50 * MiB)]
    cur = [dict(r, **{MEM: int(r[MEM] * 1.01)}) for r in base]
    got = {v.case_name: v.status for v in judge(base, cur).verdicts if v.metric == MEM}
    assert got == {
        "ci/train/baseline": "regressed",
        "small/train/baseline": "unchanged",
    }  # +2 MiB vs +0.5 MiB


def test_changed_definition_is_not_comparable_not_new_and_missing():
    base = smoke_records()
    cur = smoke_records("run-b")
    cur[1] = make_record(
        "ci", "train", ("activation_checkpointing",), run_id="run-b", definition="policy=full"
    )
    comparison = judge(base, cur)
    changed = [v for v in comparison.verdicts if v.case_name == "ci/train/activation_checkpointing"]
    assert [(v.metric, v.status) for v in changed] == [("definition", "not comparable")]
    assert base[1]["case_id"] in changed[0].detail and cur[1]["case_id"] in changed[0].detail
    assert comparison.exit_code == 3  # fails closed: the baseline's case was not measured as defined


def test_new_and_missing_cases():
    base = smoke_records()[:5]
    cur = smoke_records("run-b")[1:]
    got = [s for s in statuses(judge(base, cur), "status") if s[2] in ("new", "missing")]
    assert got == [("ci/infer/autocast_bf16", "status", "new"), ("ci/train/baseline", "status", "missing")]


def test_a_case_that_now_fails_is_failed_and_one_still_unsupported_is_unchanged():
    base = smoke_records()
    cur = smoke_records("run-b")
    cur[0] = make_record(run_id="run-b", status="oom")
    comparison = judge(base, cur)
    got = {v.case_name: v.status for v in comparison.verdicts if v.metric == "status"}
    assert got == {"ci/train/baseline": "failed", "ci/train/fsdp": "unchanged"}
    assert comparison.exit_code == 1


def test_time_needs_three_samples_per_side_else_insufficient_data():
    base = [make_record(step_times=[0.1, 0.1])]
    comparison = judge(base, [dict(base[0], run_id="b")])
    time = [v for v in comparison.verdicts if v.metric == "step_time_s"]
    assert [v.status for v in time] == ["insufficient data"]
    assert comparison.exit_code == 3


def test_time_regression_needs_a_clear_shift_of_the_median():
    steady = [0.100, 0.102, 0.098, 0.101, 0.099, 0.100]
    base = [make_record(step_times=steady)]
    slower = [make_record(step_times=[t * 1.2 for t in steady])]
    jitter = [make_record(step_times=[0.101, 0.099, 0.100, 0.102, 0.098, 0.103])]
    assert statuses(judge(base, slower), "step_time_s")[0][2] == "regressed"
    assert statuses(judge(base, jitter), "step_time_s")[0][2] == "unchanged"
    assert statuses(judge(slower, base), "step_time_s")[0][2] == "improved"


def test_loss_increase_beyond_tolerance_is_a_quality_regression():
    base = [make_record(loss=[10.0, 2.0])]
    worse = [make_record(loss=[10.0, 2.01])]
    same = [make_record(loss=[10.0, 2.0000001])]
    assert statuses(judge(base, worse), "final_loss")[0][2] == "regressed"
    assert statuses(judge(base, same), "final_loss")[0][2] == "unchanged"


def test_environment_change_blocks_memory_unless_allowed():
    base = smoke_records()
    cur = [dict(r, run_id="run-b") for r in base]
    cur[0][MEM] = int(cur[0][MEM] * 1.05)
    b, c = snap(base), snap(cur, torch_version="2.14.0")
    blocked = compare_snapshots(b, c, PolicyFile())
    assert blocked.env_diff == {"torch": ("2.13.0", "2.14.0")}
    assert {v.status for v in blocked.verdicts if v.kind == "memory"} == {"not comparable"}
    assert blocked.exit_code == 3
    allowed = compare_snapshots(b, c, PolicyFile(), allow_env_change=True)
    assert allowed.exit_code == 1  # judged now: the +5 % is a regression
    host_only = compare_snapshots(b, snap(cur, host="other-runner"), PolicyFile())
    assert host_only.env_diff == {"host": ("ci-host", "other-runner")} and host_only.exit_code == 1


def test_regression_takes_precedence_over_insufficient_data():
    base = [make_record(peak=400 * MiB, step_times=[0.1, 0.1])]
    cur = [make_record(peak=420 * MiB, step_times=[0.1, 0.1])]
    comparison = judge(base, cur)
    assert {v.status for v in comparison.verdicts} == {"regressed", "insufficient data", "unchanged"}
    assert comparison.exit_code == 1


def test_policy_overrides_per_suite_and_ungated_metrics(tmp_path):
    base = smoke_records()
    cur = [dict(r, run_id="run-b") for r in base]
    cur[0][MEM] = int(cur[0][MEM] * 1.01)
    loose = tmp_path / "loose.yaml"
    loose.write_text(
        "version: 1\nsuites:\n  smoke:\n    metrics:\n      host_rss_peak_above_base_bytes: {rel: 0.02}\n"
    )
    assert judge(base, cur, load_policy(loose)).exit_code == 0
    ungated = tmp_path / "ungated.json"
    ungated.write_text(json.dumps({"metrics": {MEM: {"gate": False}}}))
    comparison = judge(base, cur, load_policy(ungated))
    assert [v.status for v in comparison.verdicts if v.metric == MEM].count("regressed") == 1
    assert comparison.exit_code == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("version: 1\nmetric: {}\n", "metric"),  # a typo of `metrics`
        (
            "metrics:\n  host_rss_peak_above_base_bytes: {tolerance: 3}\n",
            "host_rss_peak_above_base_bytes.tolerance: unknown field; a memory policy takes gate, abs_bytes",
        ),
        ("metrics:\n  my_metric: {rel: 0.1}\n", "needs `kind`"),
        ("version: 2\n", "version"),
        # Tolerances that would switch the gate off (NaN, inf) or make every case regress (negative).
        ("metrics:\n  final_loss: {rel: .nan}\n", "metrics.final_loss.rel: Input should be a finite number"),
        ("metrics:\n  breakdown.tensor_peak_bytes: {rel: .inf}\n", "rel: Input should be a finite number"),
        (
            "metrics:\n  host_rss_peak_above_base_bytes: {abs_bytes: -1}\n",
            "abs_bytes: .*greater than or equal",
        ),
        ("metrics:\n  step_time_s: {min_samples: 0}\n", "min_samples: .*greater than or equal to 1"),
        ("metrics:\n  step_time_s: {threshold: -5}\n", "threshold: .*greater than or equal to 0"),
        ("metrics:\n  step_time_s: {confidence: 1.5}\n", "confidence: .*less than 1"),
    ],
)
def test_policy_files_are_strict(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(HarnessError, match=match) as err:
        load_policy(path)
    assert err.value.exit_code == 2 and str(path) in str(err.value)


def test_run_compare_writes_junit_markdown_and_json(tmp_path):
    base = write_run(tmp_path / "r", smoke_records())
    cur_records = smoke_records("run-b")
    cur_records[0][MEM] = int(cur_records[0][MEM] * 1.01)
    cur = write_run(tmp_path / "r", cur_records, make_manifest("run-b"))
    out = {k: tmp_path / f"o.{k}" for k in ("xml", "md", "json")}
    code = run_compare(
        base,
        cur,
        junit=out["xml"],
        md=out["md"],
        json_out=out["json"],
        console=Console(file=None, width=200, quiet=True),
    )
    assert code == 1
    suite = ET.parse(out["xml"]).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    data = json.loads(out["json"].read_text())
    assert len(cases) == len(data["verdicts"]) == int(suite.get("tests", "0"))
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert failed == [("ci/train/baseline", MEM)] and suite.get("failures") == "1"
    assert data["exit_code"] == 1 and data["counts"]["regressed"] == 1
    md = out["md"].read_text()
    row = f"| ci/train/baseline | {MEM} | regressed | 400.00 MiB | 404.00 MiB | +1.00% |"
    assert row in md


def test_junit_and_markdown_escape_user_strings():
    base = [make_record(case_name='a<b>&"c|d')]
    cur = [dict(base[0], run_id="b", status="error", error="boom <x>")]
    comparison = judge(base, cur)
    xml = to_junit(comparison)
    assert ET.fromstring(xml.split("\n", 1)[1]).find(".//failure") is not None
    assert 'classname="a&lt;b&gt;&amp;&quot;c|d"' in xml
    assert 'a&lt;b&gt;&amp;"c\\|d' in to_markdown(comparison)


def test_update_baseline_writes_a_small_file_that_compares_clean(tmp_path):
    run = write_run(tmp_path / "r", smoke_records())
    baseline = tmp_path / "baselines" / "smoke-cpu.json"
    quiet = Console(quiet=True)
    assert run_compare(baseline, run, update_baseline=True, console=quiet) == 0
    loaded = read_baseline(baseline)
    assert len(loaded.cases) == 6 and loaded.env["torch"] == "2.13.0" and loaded.run["commit"] == "abc1234"
    assert baseline.stat().st_size < 10_000
    assert run_compare(baseline, run, console=quiet) == 0
    worse = smoke_records("run-b")
    worse[1][MEM] = int(worse[1][MEM] * 1.02)
    worse_run = write_run(tmp_path / "r", worse, make_manifest("run-b"))
    assert run_compare(baseline, worse_run, console=quiet) == 1
    assert run_compare(baseline, worse_run, update_baseline=True, console=quiet) == 0  # accepted
    assert run_compare(baseline, worse_run, console=quiet) == 0


def test_usage_errors_exit_two(tmp_path):
    run = write_run(tmp_path, smoke_records())
    bad = tmp_path / "bad.json"
    bad.write_text('{"something": 1}')
    for baseline, current in ((tmp_path / "nope", run), (bad, run)):
        with pytest.raises(HarnessError) as err:
            run_compare(baseline, current, console=Console(quiet=True))
        assert err.value.exit_code == 2
    with pytest.raises(HarnessError, match=r"\.json"):
        run_compare(tmp_path / "baseline.yaml", run, update_baseline=True, console=Console(quiet=True))


def test_step_times_from_different_passes_are_not_comparable():
    from harness.compare.judge import NOT_COMPARABLE
    from harness.compare.snapshot import CaseMetrics

    def snap(source: str) -> Snapshot:
        case = CaseMetrics(
            "id1", "m/train/baseline", "s", "ok", None, {"step_time_s": [0.1, 0.1, 0.1]}, source
        )
        return Snapshot(source="x", env={}, cases=[case])

    result = compare_snapshots(snap("timing_pass"), snap("memory_pass"), load_policy(None))
    (verdict,) = [v for v in result.verdicts if v.metric == "step_time_s"]
    assert verdict.status == NOT_COMPARABLE and "different passes" in verdict.detail


def _pressed(rec: dict[str, Any]) -> dict[str, Any]:
    why = "the kernel reclaimed 2.2 MiB of the case's file-backed pages in build (memory pressure ...)"
    return dict(rec, host_memory_disturbed=True, host_memory_disturbed_reason=why)


def test_a_memory_figure_measured_under_memory_pressure_never_passes():
    """The kernel's reclaim only lowers a figure: "unchanged" or "improved" cannot be vouched for, and
    the gate fails closed; a regression still shown stands."""
    base = smoke_records()
    cur = smoke_records("run-b")
    cur[0] = _pressed(cur[0])
    comparison = judge(base, cur)
    (v,) = [v for v in comparison.verdicts if v.case_name == cur[0]["case_name"] and v.metric == MEM]
    assert (
        v.status == "insufficient data" and "current run disturbed: the kernel reclaimed 2.2 MiB" in v.detail
    )
    assert comparison.exit_code == 3
    # Every other case and every non-host metric is judged as before.
    others = {v.status for v in comparison.verdicts if v.case_name != cur[0]["case_name"] or v.metric != MEM}
    assert others <= {"unchanged", "new"}
    cur[0][MEM] = int(base[0][MEM] * 1.05)
    v = next(v for v in judge(base, cur).verdicts if v.case_name == cur[0]["case_name"] and v.metric == MEM)
    assert v.status == "regressed"
    # A disturbed baseline: a regression says the baseline read low.
    v = next(v for v in judge([_pressed(base[0])], [cur[0]]).verdicts if v.metric == MEM)
    assert v.status == "regressed" and "the baseline's figure was disturbed" in v.detail


def test_update_baseline_refuses_a_run_measured_under_memory_pressure(tmp_path):
    records = smoke_records()
    records[2] = _pressed(records[2])
    run = write_run(tmp_path / "r", records)
    baseline = tmp_path / "smoke-cpu.json"
    with pytest.raises(
        HarnessError, match=rf"not written as a baseline: 1 case\(s\).*{records[2]['case_name']}"
    ):
        run_compare(baseline, run, update_baseline=True, console=Console(quiet=True))
    assert not baseline.exists()


def test_a_baseline_that_judges_nothing_never_passes(tmp_path):
    """An empty baseline, or one whose cases hold no figures, would make every case "new": nothing was
    compared, so nothing passed (exit 3); a figure that is no number, or an unknown status, is a broken
    file (exit 3 with the case named)."""
    run = write_run(tmp_path / "r", smoke_records())
    baseline = tmp_path / "b.json"
    quiet = Console(quiet=True)
    assert run_compare(baseline, run, update_baseline=True, console=quiet) == 0
    good = json.loads(baseline.read_text())
    for name, mutate in {
        "empty": lambda b: b.update(cases=[]),
        "no metrics": lambda b: [c.update(metrics={}) for c in b["cases"]],
    }.items():
        data = json.loads(json.dumps(good))
        mutate(data)
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps(data))
        assert run_compare(bad, run, console=quiet) == 3, name
    for field, value in (("metrics", {MEM: "11600028"}), ("metrics", {MEM: True}), ("status", "weird")):
        data = json.loads(json.dumps(good))
        data["cases"][0][field] = value
        bad = tmp_path / "broken.json"
        bad.write_text(json.dumps(data))
        out = io.StringIO()
        assert run_compare(bad, run, console=Console(file=out, width=300)) == 3, (field, value)
        assert "cases[0] is not a baseline case" in out.getvalue()


def test_update_baseline_refuses_a_run_that_did_not_end(tmp_path):
    """A run stopped after 3 of its cases must not become a 3-case baseline (the gate would shrink)."""
    records = smoke_records()
    interrupted = write_run(tmp_path / "r", records[:3], make_manifest(ended_at=None, case_count=6))
    short = write_run(tmp_path / "s", records[:3], make_manifest("run-s", case_count=6))
    baseline = tmp_path / "b.json"
    with pytest.raises(HarnessError, match=r"not written as a baseline: the run did not end .*--resume"):
        run_compare(baseline, interrupted, update_baseline=True, console=Console(quiet=True))
    with pytest.raises(HarnessError, match=r"not written as a baseline: 3 records of 6 cases"):
        run_compare(baseline, short, update_baseline=True, console=Console(quiet=True))
    assert not baseline.exists()


def test_a_baseline_naming_a_case_twice_is_unreadable(tmp_path):
    run = write_run(tmp_path / "r", smoke_records())
    baseline = tmp_path / "b.json"
    quiet = Console(quiet=True)
    assert run_compare(baseline, run, update_baseline=True, console=quiet) == 0
    data = json.loads(baseline.read_text())
    data["cases"].append(dict(data["cases"][0]))
    baseline.write_text(json.dumps(data))
    out = io.StringIO()
    assert run_compare(baseline, run, console=Console(file=out, width=300)) == 3
    assert f"case {data['cases'][0]['case_id']} appears 2 times" in out.getvalue()
