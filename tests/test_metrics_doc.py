"""docs/metrics.md and the code kept in step, both ways.

1. Every key real records carry is documented: one `harness run` of a tiny suite whose cases reach
   every group of figures (exactness, inference quality, unsupported, failure, distill, technique
   metrics), plus the multi-rank keys the rank code composes; each record's flattened keys must match
   a documented name (`<...>` is a wildcard for one dotted segment or a name fragment).
2. Every documented name still exists in the code: its literal parts appear under harness/ (or the
   code composes it), so a renamed metric fails here until the doc follows.
3. Names carry units: every numeric name ends in a unit suffix, agrees with its unit column, or is in
   the commented allow-lists below.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.analysis.breakdown import CATEGORIES
from harness.errors import EXIT_FAILED
from harness.results.load import flatten
from harness.runner import case_runner, ranks
from harness.runner.caseproc import model_figures as _model_figures
from harness.runner.profile import MEMRAY_CAPTURE, ChildProfile, _capture_fields, profile_case
from harness.suite.load import load_suite
from tests.conftest import ROOT, run_cli

DOC = ROOT / "docs" / "metrics.md"
HEADER = ("name", "unit", "definition", "measured", "null / absent when")

# Unit suffixes of the naming convention; a statistic may follow the unit (step_time_s_median).
UNIT_SUFFIXES = (
    "_bytes",
    "_s",
    "_count",
    "_fraction",
    "_nats",
    "_flops",
    "_flop_per_s",
    "_per_s",
    "_per_step",
)
STAT_SUFFIXES = ("_median", "_iqr", "_max", "_by_repeat")
# The unit column a suffix implies (first match wins: _flop_per_s before _per_s before _s).
SUFFIX_UNIT = (
    ("_flop_per_s", "FLOP/s"),
    ("_per_s", "1/s"),
    ("_bytes", "bytes"),
    ("_s", "s"),
    ("_count", "count"),
    ("_fraction", "fraction"),
    ("_nats", "nats"),
)
NUMERIC_UNITS = frozenset(
    {"bytes", "s", "count", "fraction", "nats", "FLOPs", "FLOP/s", "1/s", "ratio", "1", "integer"}
    | {"weight units", "objective"}
)
NON_NUMERIC_UNITS = frozenset(
    {"text", "bool", "timestamp", "path", "setting", "list of text", "list of objects"}
)

# Numbers that label or configure a case rather than measure it: no unit to carry.
NUMERIC_LABELS = frozenset({"record_version", "batch_size", "seq_len", "exit_code", "ranks[].rank"})
# Accepted exceptions: the unit is not one the convention can name.
ACCEPTED = {
    "loss": "the objective's own unit: nats for plain cross-entropy, more terms under L1 or distill",
    "perplexity": "dimensionless by definition",
    "l1_norm": "in the weights' own units",
    "l1_sparsity_threshold": "in the weights' own units (a configured threshold)",
}
# Break the convention. docs/metrics.md proposes each rename; renaming edits the code, the doc and this.
CONVENTION_BREAKS = {
    "threads": "torch_thread_count",
    "ranks[].threads": "torch_thread_count",
    "world_size": "rank_count",
    "exact_rtol": "exact_rtol_ratio",
    "loss_max_rel_diff_vs_baseline": "loss_max_rel_diff_vs_baseline_ratio",
    "tensor_peak_measured_over_predicted": "tensor_peak_measured_over_predicted_ratio",
    "max_distinct_values": "max_distinct_value_count",
    "heads_kept_total": "kept_head_count",
    "ffn_neurons_kept_total": "kept_ffn_neuron_count",
    "student_ce_loss": "student_ce_loss_nats",
    "soft_kl_loss": "soft_kl_loss_nats",
    "memray_total_allocations": "memray_allocation_count",
    "ranks[].param_bytes_local": "local_param_bytes",
    "rank_param_bytes_local_max": "local_param_bytes",
}


# ---- the document -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    unit: str
    scope: str  # record, manifest or timeline


def _cells(line: str) -> list[str]:
    # `\|` inside a cell is a literal bar (|x|), not a column separator.
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _scope(heading: str) -> str:
    if "`manifest.json`" in heading:
        return "manifest"
    if "`timeline.json`" in heading:
        return "timeline"
    return "record"


def doc_rows() -> list[Row]:
    """Every row of every metric table (the tables headed name | unit | definition | ...)."""
    rows: list[Row] = []
    heading, in_table = "", False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if tuple(cells) == HEADER:
            in_table = True
        elif in_table and not set(line) <= set("|- "):
            m = re.fullmatch(r"`([^`]+)`", cells[0])
            assert m and len(cells) == len(HEADER), f"docs/metrics.md: malformed row: {line}"
            rows.append(Row(m.group(1), cells[1], _scope(heading)))
    return rows


ROWS = doc_rows()


def names(scope: str) -> list[str]:
    return [r.name for r in ROWS if r.scope == scope]


def name_pattern(name: str) -> re.Pattern[str]:
    """`phases.<phase>.duration_s` -> a regex where each `<...>` matches one segment or fragment."""
    return re.compile("[^.]+".join(re.escape(part) for part in re.split(r"<[^>]+>", name)))


def undocumented(keys: Iterable[str], scope: str) -> list[str]:
    patterns = [name_pattern(n) for n in names(scope)]
    return sorted({k for k in keys if not any(p.fullmatch(k) for p in patterns)})


def test_doc_has_every_group_and_no_duplicate_names() -> None:
    for scope in ("record", "manifest", "timeline"):
        listed = names(scope)
        assert len(listed) == len(set(listed)), f"{scope}: duplicate rows"
    assert len(names("record")) >= 150  # the tables were parsed, not skipped
    for unit in (r.unit for r in ROWS):
        base = re.sub(r", list( of lists)?$", "", unit)
        assert base in NUMERIC_UNITS | NON_NUMERIC_UNITS, f"unknown unit {unit!r} in docs/metrics.md"


# ---- 1. every key of real records is documented ----------------------------------------------------

SUITE = """\
version: 1
name: metrics-doc
defaults:
  warmup_steps: 1
  measured_steps: 2
  timing_pass: true
  repeats: 2
  data: corpus
  reference_steps: 5
  heldout_batches: 1
  timeout_s: 120
models:
  tiny: {{size: ci, n_layers: 2, d_model: 64, n_heads: 2, d_ff: 128}}
workloads:
  train: {{kind: train, batch_size: 2, seq_len: 32}}
  infer: {{kind: infer, batch_size: 2, seq_len: 32}}
  distill:
    kind: distill
    batch_size: 2
    seq_len: 32
    teacher: ci
    teacher_overrides: {{n_layers: 1, d_model: 64, n_heads: 2, d_ff: 128}}
  # The teacher cannot take the sequence: the case process fails (an `error` record with its traceback).
  distill_short:
    kind: distill
    batch_size: 2
    seq_len: 32
    teacher: ci
    teacher_overrides: {{n_layers: 1, d_model: 64, n_heads: 2, d_ff: 128, max_seq_len: 16}}
techniques:
  baseline: []
  ckpt: [activation_checkpointing]
  fp16: [{{autocast: {{dtype: float16}}}}]
  pruning: [unstructured_pruning]
  lora: [lora]
  woq: [weight_only_quantization]
# Timing passes add no keys beyond the first block's (two repeats there); elsewhere they would only
# triple the processes, so the other blocks run the memory pass alone (keeps the file near 60 s).
matrix:
  - {{model: [tiny], workload: [train], techniques: [baseline, ckpt, fp16]}}
  - model: [tiny]
    workload: [train]
    techniques: [pruning, lora]
    defaults: {{timing_pass: false}}
  - model: [tiny]
    workload: [infer]
    techniques: [{infer}]
    defaults: {{timing_pass: false}}
  - model: [tiny]
    workload: [distill, distill_short]
    techniques: [baseline]
    defaults: {{timing_pass: false}}
"""

HAVE_BNB = importlib.util.find_spec("bitsandbytes") is not None


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str
    records: dict[tuple[str, str], dict[str, Any]]  # (workload_name, techniques_name) -> record
    manifest: dict[str, Any]
    timelines: list[dict[str, Any]]
    seconds: float


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("metrics-doc")
    suite = tmp / "suite.yaml"
    suite.write_text(SUITE.format(infer="baseline, woq" if HAVE_BNB else "baseline"))
    t0 = time.monotonic()
    proc = run_cli("run", str(suite), "--results", str(tmp / "results"), timeout=300)
    seconds = time.monotonic() - t0
    (run_dir,) = [p for p in (tmp / "results").iterdir() if p.is_dir()]
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    records = {(r["workload_name"], r["techniques_name"]): r for r in map(json.loads, lines)}
    timelines = [
        json.loads((run_dir / r["timeline_file"]).read_text())
        for r in records.values()
        if "timeline_file" in r
    ]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return Run(proc.returncode, proc.stderr, records, manifest, timelines, seconds)


@pytest.mark.slow
def test_the_run_reaches_every_group_of_figures(run: Run) -> None:
    print(f"harness run of the metrics-doc suite: {run.seconds:.1f} s")
    assert run.returncode == EXIT_FAILED, run.stderr  # the distill_short case fails, as meant
    statuses = {key: r["status"] for key, r in run.records.items()}
    expected = {
        ("train", "baseline"): "ok",
        ("train", "ckpt"): "ok",
        ("train", "fp16"): "unsupported",
        ("train", "pruning"): "ok",
        ("train", "lora"): "ok",
        ("infer", "baseline"): "ok",
        ("distill", "baseline"): "ok",
        ("distill_short", "baseline"): "error",
    }
    if HAVE_BNB:
        expected[("infer", "woq")] = "ok"
    assert statuses == expected
    r = run.records
    assert r[("train", "ckpt")]["exactness"] == "ok"
    assert len(r[("train", "baseline")]["step_time_s_by_repeat"]) == 2
    assert r[("train", "baseline")]["timing_source"] == "timing_pass"
    assert r[("infer", "baseline")]["timing_source"] == "memory_pass"
    assert r[("infer", "baseline")]["kl_divergence_nats"] >= 0
    assert r[("train", "pruning")]["sparsity_fraction"] > 0
    assert r[("train", "lora")]["trainable_param_count"] < r[("train", "baseline")]["trainable_param_count"]
    assert r[("distill", "baseline")]["teacher_forward_peak_bytes"] > 0
    assert "max_seq_len" in r[("distill_short", "baseline")]["traceback_tail"]
    assert r[("train", "baseline")]["breakdown"]["tensor_peak_bytes"] > 0
    assert r[("train", "baseline")]["predicted"]["tensor_peak_bytes"] > 0
    if HAVE_BNB:
        assert r[("infer", "woq")]["quantized_layer_count"] > 0


@pytest.mark.slow
def test_every_record_key_is_documented(run: Run) -> None:
    keys = {k for record in run.records.values() for k in flatten(record)}
    assert len(keys) > 100
    assert undocumented(keys, "record") == []


@pytest.mark.slow
def test_manifest_and_timeline_keys_are_documented(run: Run) -> None:
    assert undocumented(flatten(run.manifest), "manifest") == []
    assert len(run.timelines) == len(run.records) - 1  # every case but the unsupported one
    assert undocumented({k for t in run.timelines for k in flatten(t)}, "timeline") == []


def _rank_result(rank: int) -> dict[str, Any]:
    """One rank's result as `ranks.run_rank` writes it, with the figures its PhaseMeter really measures
    (on this process: the meter reads and resets its own VmHWM at each boundary)."""
    meter = ranks.PhaseMeter(torch, False, time.monotonic())
    for mark in ranks.RANK_MARKS:
        meter.boundary(mark)
    return {
        "rank": rank,
        "status": "ok",
        "device": "cpu",
        "threads": 1,
        "loss": [1.0],
        "samples_per_step": 2,
        "tokens_per_step": 64,
        "model": _model_figures(torch.nn.Linear(2, 2)),
        "metrics": {},
        "step_time_s": [0.1],
        "step_cpu_time_s": [0.1],
        "param_bytes_local": 24,
        "optimizer_state_bytes": 48,
        **meter.figures(),
    }


def test_multi_rank_keys_are_documented() -> None:
    """A torchrun case is too slow for this file: merge two ranks' results with the launcher's code and
    check the keys that merge and the case runner compose."""
    merged = ranks.merge([_rank_result(0), _rank_result(1)], 0, 2)
    record = {**merged, **case_runner._rank_memory_fields(merged)}
    assert record["world_size"] == 2 and record["rank_optimizer_state_bytes_max"] == 48
    assert undocumented(flatten(record), "record") == []
    rank_keys = {f"ranks[].{k}" for entry in record["ranks"] for k in flatten(entry)}
    # Every key the launcher keeps of a rank (`error` only when the rank failed) is among them.
    kept = {k.removeprefix("ranks[].").split(".")[0] for k in rank_keys}
    assert kept == set(ranks.RANK_KEYS) - {"error"}
    assert undocumented(rank_keys | {"ranks[].error"}, "record") == []


def test_profile_keys_are_documented(tmp_path: Path) -> None:
    """`--profile memray` adds a process per case, too slow for the run above: record a capture here with
    the case process's own profiler and read it with the parent's code; refuse one profile likewise."""
    pytest.importorskip("memray")
    profiler = ChildProfile(torch, False, env=f"memray:{tmp_path}")
    profiler.start()
    block = torch.ones(1024, 1024)  # 4 MiB live while memray records
    profiler.stop()
    fields = _capture_fields(tmp_path / MEMRAY_CAPTURE)
    assert fields["memray_peak_memory_bytes"] >= block.numel() * block.element_size()
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(infer="baseline"))
    refused = profile_case(load_suite(suite).cases[0], tmp_path, tmp_path, None, "nonesuch")
    assert refused["profile_unavailable_reason"].startswith("unknown profiler")
    assert undocumented({*fields, *refused}, "record") == []


# ---- 2. every documented name exists in the code ---------------------------------------------------


def harness_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "harness").rglob("*.py")))


def composed_names() -> set[str]:
    """Names the code builds from parts (f"rank_{key}_max", f"launcher_{key}", f"{category}_bytes")."""
    out = set(ranks._maxima([])) | set(case_runner._rank_memory_fields({}))
    return out | {f"breakdown.{category}_bytes" for category in CATEGORIES.values()}


def missing_from(source: str, name: str, composed: set[str]) -> list[str]:
    """The literal parts of `name` that appear nowhere in `source` as a whole word."""
    if name in composed:
        return []
    parts = []
    for segment in name.replace("[]", "").split("."):
        parts += [p.strip("_") for p in re.split(r"<[^>]+>", segment)]
    return [
        p for p in parts if p and not re.search(rf"(?<![A-Za-z0-9_]){re.escape(p)}(?![A-Za-z0-9_])", source)
    ]


def test_every_documented_name_exists_in_the_code() -> None:
    source, composed = harness_source(), composed_names()
    gone = {r.name: parts for r in ROWS if (parts := missing_from(source, r.name, composed))}
    assert gone == {}


def test_the_name_check_catches_a_rename() -> None:
    source, composed = harness_source(), composed_names()
    assert missing_from(source, "host_rss_peak_above_base_bytes", composed) == []
    assert missing_from(source, "host_rss_peak_over_base_bytes", composed) == [
        "host_rss_peak_over_base_bytes"
    ]
    assert missing_from(source, "phases.<phase>.duration_seconds", composed) == ["duration_seconds"]
    assert missing_from(source, "breakdown.buffers_bytes", composed) == []


# ---- 3. names carry units --------------------------------------------------------------------------


def unit_name(name: str) -> str:
    """The part of a name that should end in its unit: the last segment, statistic suffixes removed."""
    last = name.rsplit(".", 1)[-1]
    for stat in STAT_SUFFIXES:
        last = last.removesuffix(stat)
    return last


def is_numeric(row: Row) -> bool:
    return re.sub(r", list( of lists)?$", "", row.unit) in NUMERIC_UNITS


def test_numeric_names_end_in_their_unit() -> None:
    allowed = NUMERIC_LABELS | set(ACCEPTED) | set(CONVENTION_BREAKS)
    bad = [
        r.name
        for r in ROWS
        if is_numeric(r) and r.name not in allowed and not unit_name(r.name).endswith(UNIT_SUFFIXES)
    ]
    assert bad == []


def test_the_unit_column_agrees_with_the_suffix() -> None:
    wrong = {}
    for r in ROWS:
        expected = next((u for suffix, u in SUFFIX_UNIT if unit_name(r.name).endswith(suffix)), None)
        base = re.sub(r", list( of lists)?$", "", r.unit)
        if expected is not None and base != expected:
            wrong[r.name] = (r.unit, expected)
    assert wrong == {}


def test_allow_lists_are_not_stale() -> None:
    """Each allow-listed name is documented, numeric, and really lacks a unit suffix; each proposed
    rename is written in the doc."""
    rows = {r.name: r for r in ROWS}
    text = DOC.read_text(encoding="utf-8")
    for name in NUMERIC_LABELS | set(ACCEPTED) | set(CONVENTION_BREAKS):
        assert name in rows, f"{name}: allow-listed but not documented"
        assert is_numeric(rows[name]), f"{name}: allow-listed but not numeric"
        assert not unit_name(name).endswith(UNIT_SUFFIXES), f"{name}: carries a unit; drop it from the list"
    for rename in CONVENTION_BREAKS.values():
        assert f"`{rename}`" in text, f"docs/metrics.md does not propose {rename}"


def test_breakdown_categories_are_the_trackers() -> None:
    documented = {n for n in names("record") if re.fullmatch(r"breakdown\.\w+_bytes", n)}
    assert documented == {f"breakdown.{c}_bytes" for c in CATEGORIES.values()} | {
        "breakdown.tensor_peak_bytes"
    }
