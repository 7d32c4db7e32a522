"""harness fit: the search, budget parsing, and the fits-on answers of real and estimated probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.cli import main
from harness.fit.budget import parse_budgets
from harness.fit.devices import DEVICES
from harness.fit.search import largest_fitting
from harness.fit.view import DOES_NOT_FIT, cell_text, fit_markdown
from harness.suite.load import load_suite
from tests.conftest import run_cli


@pytest.mark.parametrize("threshold", [1, 2, 5, 37, 64, 100])
def test_search_finds_the_boundary(threshold: int):
    result = largest_fitting(lambda v: v <= threshold, maximum=100)
    assert result.largest == threshold
    asked = dict(result.probed)
    assert asked[threshold] is True
    if threshold < 100:
        assert result.first_failing == threshold + 1 and asked[threshold + 1] is False
    else:
        assert result.at_axis_max
    assert len(result.probed) <= 2 * 7 + 1  # exponential then binary: logarithmic in the answer


def test_search_nothing_fits_and_undecided():
    nothing = largest_fitting(lambda v: False, maximum=64)
    assert (nothing.largest, nothing.first_failing, len(nothing.probed)) == (0, 1, 1)
    broken = largest_fitting(lambda v: True if v < 4 else None, maximum=64)
    assert broken.largest == 2 and broken.undecided


def test_search_starts_at_the_smallest_value_the_case_can_take(write_suite):
    """A generate case on the seq_len axis holds its new tokens and at least one prompt token: the search
    never asks below that (a probe at 1 could only fail for a reason that is not memory)."""
    from harness.fit.run import axis_minimum

    result = largest_fitting(lambda v: v <= 40, maximum=100, minimum=5)
    assert min(v for v, _ in result.probed) == 5 and result.largest == 40 and result.first_failing == 41
    nothing = largest_fitting(lambda v: False, maximum=100, minimum=5)
    assert (nothing.largest, nothing.first_failing, nothing.probed) == (0, 5, [(5, False)])
    suite = load_suite(
        write_suite(
            """\
            version: 1
            models: {m: {size: ci}}
            workloads:
              gen: {kind: generate, batch_size: 1, prompt_len: 8, new_tokens: 4}
              gen_default: {kind: generate, batch_size: 1, prompt_len: 8}
              train: {kind: train, batch_size: 1, seq_len: 16}
            techniques: {b: []}
            matrix: {model: [m], workload: [gen, gen_default, train], techniques: [b]}
            """
        )
    )
    by = {c.workload_name: c for c in suite.cases}
    assert axis_minimum(by["gen"], "seq_len") == 5 and axis_minimum(by["gen"], "batch_size") == 1
    assert axis_minimum(by["gen_default"], "seq_len") == 33  # the default 32 new tokens
    assert axis_minimum(by["train"], "seq_len") == 1


def test_budgets_parse_units_host_and_devices():
    b = parse_budgets(["24GiB,200MiB", "host"], ["h100-80gb"])
    assert [x.bytes for x in b[:2]] == [24 * 2**30, 200 * 2**20]
    assert b[2].kind == "host" and b[2].bytes > 0
    assert b[3].bytes == DEVICES["h100-80gb"].usable_bytes and b[3].kind == "device"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--device", "h100"], "not in the device table"),
        (["--budget=-1GiB"], "cannot be negative"),
        (["--budget", "-1GiB"], "cannot be negative"),  # as typed: not argparse's "expected one argument"
        (["--budget", "1GiB", "--max", "-4"], "must be positive"),
        (["--budget", "1GiB", "--max", "0"], "must be positive"),  # not a silent 4096
        (["--budget", "lots"], "not a size"),
        (["--budget", "1e400"], "not a size"),  # overflows a float: no OverflowError traceback
        (["--budget", "1e400GiB"], "not a size"),
        (["--axis", "depth"], "not a fit axis"),
        ([], "give --budget"),
    ],
)
def test_bad_fit_arguments_are_one_line_and_exit_2(args, names, capsys):
    assert main(["fit", "suites/fit.yaml", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and len(err.splitlines()) == 1


def test_cells_and_markdown():
    answers = [
        {"combination": "m/w/a", "budget": "1GiB", "axis": "batch_size", "largest": 0},
        {
            "combination": "m/w/b",
            "budget": "1GiB",
            "axis": "batch_size",
            "largest": 12,
            "tokens_per_s": 900.0,
        },
    ]
    assert cell_text(answers[0]) == DOES_NOT_FIT
    md = fit_markdown(answers, ["1GiB"])
    # rows ranked by the largest fit: b (12) above a (0)
    assert md.index("m/w/b") < md.index("m/w/a") and "12 · 900 tok/s" in md


SUITE = """
version: 1
name: fittest
defaults: {warmup_steps: 1, measured_steps: 1, timing_pass: false, quality: false, breakdown: false,
           data: random, timeout_s: 120}
models:
  tiny: {size: ci, n_layers: 2}
workloads:
  train: {kind: train, batch_size: 1, seq_len: 256}
techniques:
  baseline: []
  activation_checkpointing: [activation_checkpointing]
matrix:
  - model: [tiny]
    workload: [train]
    techniques: TECHS
"""


def _fit_run(run_root: Path) -> Path:
    (run,) = [p for p in run_root.iterdir() if (p / "fit.jsonl").is_file()]  # beside suites, other runs
    return run


def _lines(run_root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (_fit_run(run_root) / "fit.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_budget_nothing_fits_is_an_answer_and_resume_reasks_nothing(write_suite, tmp_path: Path):
    suite = write_suite(SUITE.replace("TECHS", "[baseline]"))
    first = run_cli("fit", str(suite), "--budget", "1MiB", "--results", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert DOES_NOT_FIT in first.stdout
    lines = _lines(tmp_path)
    assert [r["record_kind"] for r in lines] == ["fit_probe", "fit_answer"]
    assert lines[0]["status"] in ("ok", "oom") and lines[0]["fits"] is False
    run_dir = _fit_run(tmp_path)
    again = run_cli("fit", str(suite), "--budget", "1MiB", "--resume", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert len(_lines(tmp_path)) == 2  # nothing re-asked
    # Its answers hold for its own questions only: another ceiling, another suite, or a measurement run
    # is refused in one line, and nothing is written.
    other = write_suite(SUITE.replace("TECHS", "[baseline, activation_checkpointing]"), "other.yaml")
    for args, says in (
        (
            ["--max", "64", "--resume", str(run_dir)],
            "a fit run asked otherwise (maximum default there, 64 now)",
        ),
        (["--resume", str(run_dir)], "not of this suite file"),
    ):
        refused = run_cli("fit", str(other if "not of" in says else suite), "--budget", "1MiB", *args)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1
    measured = run_cli("run", str(suite), "--results", str(tmp_path / "m"))
    refused = run_cli(
        "fit", str(suite), "--budget", "1MiB", "--resume", str(next((tmp_path / "m").iterdir()))
    )
    assert refused.returncode == 2 and "not a fit run" in refused.stderr, measured.stderr + refused.stderr
    assert len(_lines(tmp_path)) == 2


@pytest.mark.slow
def test_estimated_fit_finds_a_boundary_and_checkpointing_fits_more(write_suite, tmp_path: Path):
    suite = write_suite(SUITE.replace("TECHS", "[baseline, activation_checkpointing]"))
    out = run_cli("fit", str(suite), "--budget", "48MiB", "--estimate", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = _lines(tmp_path)
    answers = {r["combination"]: r for r in lines if r["record_kind"] == "fit_answer"}
    for combo, answer in answers.items():
        est = {
            r["value"]: r["fits"]
            for r in lines
            if r["record_kind"] == "fit_probe" and r["combination"] == combo and r["method"] == "estimate"
        }
        b = answer.get("largest_estimated", answer["largest"])  # the estimate's boundary
        assert b >= 1 and est[b] is True and est[b + 1] is False, (combo, est)
        assert any(r["method"] == "run" and r["value"] == b for r in lines if r.get("combination") == combo)
        if "largest_estimated" in answer:  # a real run refused it: the headline is what runs found below
            runs = {
                r["value"]: r["fits"] for r in lines if r.get("combination") == combo and r["method"] == "run"
            }
            assert answer["verified_by_run"] is False and answer["largest"] < b and runs[b] is False
            assert answer["largest"] == 0 or runs[answer["largest"]] is True
            assert runs.get(answer["largest"] + 1, False) is False
    # The estimates' answers: checkpointing fits more. (The real runs' answers follow the machine's host
    # RSS: 4 vs 3 in this venv, 0 vs 1 once in a fresh tox env; the estimate does not.)
    estimated = {c: a.get("largest_estimated", a["largest"]) for c, a in answers.items()}
    assert estimated["tiny/train/activation_checkpointing"] > estimated["tiny/train/baseline"], estimated
    # the report of this run: the heat map of both answers beside the Pareto chart of their probes
    from harness.report import build_report
    from tests.fixtures_fit import page_figures

    run = next(tmp_path.glob("*/fit.jsonl")).parent
    page = build_report([run], tmp_path / "fit.html", "html").read_text()
    (heat, _), (pareto, layout) = page_figures(page)
    fits = heat[0]
    assert fits["type"] == "heatmap" and fits["x"] == ["48MiB"]
    shown = {y: z[0] for y, z in zip(fits["y"], fits["z"], strict=True)}
    for c, a in answers.items():  # log2 of the answer; nothing fits: no colour
        assert (shown[c] is None) if a["largest"] == 0 else round(2 ** shown[c]) == a["largest"], (c, shown)
    traces = {t["name"]: t for t in pareto}
    assert traces["budget 48MiB"]["x"] == [48.0, 48.0] and "Pareto front" in traces
    # each answer is a marker at its real probe's measured peak, or named under the chart with why
    plotted = " ".join(traces.get("under 48MiB", {}).get("hovertext", []))
    for combo, a in answers.items():  # an answer that fits at all (one that does not is the heat map's)
        assert a["largest"] == 0 or combo in plotted or f"{combo} @ 48MiB" in page, combo
    assert layout["xaxis"]["title"]["text"].startswith(
        "peak memory, MiB: host RSS above the post-import base"
    )


def test_report_of_a_fit_run_is_the_fits_on_view(tmp_path: Path):
    from harness.report import build_report

    run = tmp_path / "run"
    run.mkdir()
    answers = [
        {"record_kind": "fit_probe", "combination": "m/w/a", "budget": "1GiB", "axis": "batch_size"},
        {
            "record_kind": "fit_answer",
            "combination": "m/w/a",
            "budget": "1GiB",
            "axis": "batch_size",
            "largest": 0,
        },
        {
            "record_kind": "fit_answer",
            "combination": "m/w/b",
            "budget": "1GiB",
            "axis": "batch_size",
            "largest": 7,
        },
    ]
    (run / "fit.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    html = build_report([run], tmp_path / "fit.html", "html").read_text()
    assert '"type":"heatmap"' in html and DOES_NOT_FIT in html
    md = build_report([run], tmp_path / "fit.md", "md").read_text()
    assert "| m/w/b | 7 |" in md and f"| m/w/a | {DOES_NOT_FIT} |" in md


def test_no_answer_at_1_is_not_does_not_fit(tmp_path: Path):
    from harness.fit.budget import Budget
    from harness.fit.run import FitLog, FitOptions, Prober, fit_one

    class _Case:
        model_name, workload_name, techniques_name, device = "m", "w", "t", "cpu"
        model: ClassVar[dict[str, Any]] = {}
        techniques: ClassVar[list[Any]] = []

    prober = Prober(tmp_path, "r", FitLog(tmp_path / "fit.jsonl"))
    prober.real = lambda *a: {"fits": None, "status": "error", "error": "boom"}  # type: ignore[method-assign]
    case: Any = _Case()
    answer = fit_one(case, Budget("1GiB", 2**30, "bytes"), FitOptions("batch_size", 8, False), prober, None)
    assert answer["largest"] is None and "boom" in answer["reason"]
    assert cell_text(answer).startswith("n/a (error: boom")
    long = {**answer, "reason": "unsupported: needs 2 ranks (ZeRO/FSDP); " + "x" * 200 + " the end"}
    assert cell_text(long).endswith("the end)")  # a reason is never cut mid-word to fit a cell


def _cgroup(tmp_path: Path, version: int, limit: str, usage: int, inactive: int) -> Path:
    d = tmp_path / f"cg{version}"
    d.mkdir()
    files = (
        ("memory.max", "memory.current")
        if version == 2
        else ("memory.limit_in_bytes", "memory.usage_in_bytes")
    )
    (d / files[0]).write_text(limit + "\n")
    (d / files[1]).write_text(f"{usage}\n")
    key = "inactive_file" if version == 2 else "total_inactive_file"
    (d / "memory.stat").write_text(f"cache 1\n{key} {inactive}\nactive_file 5\n")
    return d


@pytest.mark.parametrize("version", [1, 2])
def test_host_budget_is_the_memory_cgroup_headroom_when_it_has_a_limit(tmp_path, monkeypatch, version):
    """In a container or a Slurm job the cgroup's limit, not the machine's MemAvailable, is what a probe
    can take: limit - usage, with reclaimable page cache counted as free."""
    from harness.runner import procmem

    gib = 2**30
    d = _cgroup(tmp_path, version, str(3 * gib), usage=gib, inactive=gib // 2)
    monkeypatch.setattr(procmem, "_memory_cgroup_dirs", lambda: [(version, d)])
    assert procmem.cgroup_memory_headroom_bytes() == 3 * gib - gib + gib // 2
    host = parse_budgets(["host"], [])[0]
    assert host.kind == "host" and host.bytes == min(int(2.5 * gib), _mem_available_bytes())


@pytest.mark.parametrize("version, limit", [(2, "max"), (1, str(9223372036854771712))])
def test_an_unlimited_cgroup_leaves_the_host_budget_to_mem_available(tmp_path, monkeypatch, version, limit):
    from harness.fit import budget
    from harness.runner import procmem

    d = _cgroup(tmp_path, version, limit, usage=2**30, inactive=0)
    monkeypatch.setattr(procmem, "_memory_cgroup_dirs", lambda: [(version, d)])
    assert procmem.cgroup_memory_headroom_bytes() is None
    # the machine's own figure, which moves a little between two readings
    assert abs(budget.host_available_bytes() - _mem_available_bytes()) < 2**30


def _mem_available_bytes() -> int:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    return next(int(x.split()[1]) * 1024 for x in meminfo if x.startswith("MemAvailable:"))


ZERO_SUITE = """
version: 1
name: fitzero
defaults: {warmup_steps: 1, measured_steps: 1, timing_pass: false, quality: false, data: random}
models:
  tiny: {size: ci, n_layers: 1}
workloads:
  train: {kind: train, batch_size: 2, seq_len: 16}
techniques:
  zero1: [zero1]
matrix:
  - {model: [tiny], workload: [train], techniques: [zero1]}
"""


@pytest.mark.parametrize("fits_up_to, largest", [(11, 10), (1, 0)])
def test_a_multi_rank_batch_moves_in_whole_per_rank_batches(write_suite, tmp_path, fits_up_to, largest):
    """zero1 splits the batch over 2 ranks: a probe at an odd batch is a case that cannot run, so the
    search steps 2, 4, 8, ... and the answer is a batch the ranks can share."""
    from harness.fit.budget import Budget
    from harness.fit.run import FitLog, FitOptions, fit_one

    case = load_suite(write_suite(ZERO_SUITE)).cases[0]
    asked: list[int] = []

    class Prober:
        log = FitLog(tmp_path / "fit.jsonl")

        def real(self, case, combo, axis, value, budget):
            asked.append(value)
            return {"fits": value <= fits_up_to, "status": "ok", "tokens_per_s": 1.0}

    budget = Budget("b", 2**30, "bytes")
    answer = fit_one(case, budget, FitOptions("batch_size", 64, False), Prober(), None)  # type: ignore[arg-type]
    assert asked and all(v % 2 == 0 for v in asked), asked
    assert answer["largest"] == largest and answer["batch_step"] == 2
    if largest:
        assert answer["first_failing"] == largest + 2 and largest + 2 in asked
        assert cell_text(answer).startswith(str(largest))
    else:
        assert asked == [2] and cell_text(answer) == "does not fit at 2 (2 ranks x 1)"


@pytest.mark.parametrize("truth", [0, 1, 5, 1800, 1950, 1980, 2190])
def test_below_an_estimate_that_did_not_fit_runs_find_the_real_answer(truth: int):
    """The estimate said 2191 and a real run said no: real probes below it find the largest that fits,
    in few probes when the estimate was close, and 'does not fit' when nothing does."""
    from harness.fit.search import largest_below

    result = largest_below(lambda v: v <= truth, fails_at=2191)
    assert result.largest == truth and result.first_failing == (truth + 1 if truth else 1)
    assert all(v < 2191 for v, _ in result.probed)
    if truth >= 0.9 * 2191:  # within 10 %: 0.9x first, then a binary search of the last tenth
        assert len(result.probed) <= 9
    assert len(result.probed) <= 2 * 12  # halving, then a binary search: logarithmic either way


def test_a_corrected_answer_reads_as_measured_beside_the_estimate():
    cell = cell_text(
        {"largest": 2161, "largest_estimated": 2191, "verified_by_run": False, "tokens_per_s": 5881.0}
    )
    assert cell == "2161 · 5,881 tok/s (measured; the estimate's 2191 did not fit)"
    assert "real probe" not in cell
