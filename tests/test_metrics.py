"""The metric catalog (harness/metrics) against the code: every key real records carry has an entry,
every entry names a key the code still writes, names carry their units, and adding a metric is one entry.

The real-run check runs one `harness run` of a tiny suite whose cases reach every group of figures
(exactness, inference quality, unsupported, failure, distill, technique metrics), plus the multi-rank
keys the rank code composes and the profile keys.
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

import pandas as pd
import pytest
import torch

from harness import metrics
from harness.analysis.breakdown import CATEGORIES
from harness.compare.policy import DEFAULT_METRICS, MemoryPolicy, PolicyFile, QualityPolicy, TimePolicy
from harness.errors import EXIT_FAILED
from harness.metrics import catalog
from harness.metrics.base import Metric, Section
from harness.metrics.doc import metrics_markdown
from harness.metrics.record import flatten
from harness.report.html import savings_tables
from harness.report.tidy import savings, tidy
from harness.runner import case_runner, ranks
from harness.runner.caseproc import model_figures as _model_figures
from harness.runner.profile import MEMRAY_CAPTURE, ChildProfile, _capture_fields, profile_case
from harness.suite.load import load_suite
from tests.conftest import ROOT, run_cli
from tests.fixtures_results import MiB, make_record

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
# Report-derived quotients name their dimensionless unit.
DERIVED_SUFFIXES = ("_ratio",)
STAT_SUFFIXES = ("_median", "_iqr", "_max", "_by_repeat")
# The unit a suffix implies (first match wins: _flop_per_s before _per_s before _s).
SUFFIX_UNIT = (
    ("_flop_per_s", "FLOP/s"),
    ("_per_s", "1/s"),
    ("_bytes", "bytes"),
    ("_s", "s"),
    ("_count", "count"),
    ("_fraction", "fraction"),
    ("_nats", "nats"),
)


def names(scope: str) -> list[str]:
    return [m.name for m in metrics.all_metrics(scope)]


def uncatalogued(keys: Iterable[str], scope: str) -> list[str]:
    return sorted({k for k in keys if metrics.lookup(k, scope) is None})


def test_catalog_has_every_group_and_no_duplicate_names() -> None:
    for scope in ("record", "manifest", "timeline", "derived"):
        listed = names(scope)
        assert len(listed) == len(set(listed)), f"{scope}: duplicate entries"
    assert len(names("record")) >= 150
    for m in metrics.all_metrics():
        assert m.definition and m.kind and m.better and m.display, m.name


def test_lookup_matches_wildcards_and_get_names_the_catalog() -> None:
    assert metrics.lookup("phases.build.duration_s").name == "phases.<phase>.duration_s"  # type: ignore[union-attr]
    assert metrics.lookup("no_such_figure_bytes") is None
    with pytest.raises(KeyError, match=r"harness/metrics/catalog\.py"):
        metrics.get("no_such_figure_bytes")


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
    assert uncatalogued(keys, "record") == []


@pytest.mark.slow
def test_manifest_and_timeline_keys_are_documented(run: Run) -> None:
    assert uncatalogued(flatten(run.manifest), "manifest") == []
    assert len(run.timelines) == len(run.records) - 1  # every case but the unsupported one
    assert uncatalogued({k for t in run.timelines for k in flatten(t)}, "timeline") == []


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
    assert uncatalogued(flatten(record), "record") == []
    rank_keys = {f"ranks[].{k}" for entry in record["ranks"] for k in flatten(entry)}
    # Every key the launcher keeps of a rank (`error` only when the rank failed) is among them.
    kept = {k.removeprefix("ranks[].").split(".")[0] for k in rank_keys}
    assert kept == set(ranks.RANK_KEYS) - {"error"}
    assert uncatalogued(rank_keys | {"ranks[].error"}, "record") == []


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
    assert uncatalogued({*fields, *refused}, "record") == []


# ---- every catalogued name exists in the code -------------------------------------------------------


def harness_source() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8")
        for p in sorted((ROOT / "harness").rglob("*.py"))
        if p.parent.name != "metrics"  # the catalog itself does not count as writing a key
    )


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


def test_every_catalogued_name_exists_in_the_code() -> None:
    source, composed = harness_source(), composed_names()
    gone = {m.name: parts for m in metrics.all_metrics() if (parts := missing_from(source, m.name, composed))}
    assert gone == {}


def test_the_name_check_catches_a_rename() -> None:
    source, composed = harness_source(), composed_names()
    assert missing_from(source, "host_rss_peak_above_base_bytes", composed) == []
    assert missing_from(source, "host_rss_peak_over_base_bytes", composed) == [
        "host_rss_peak_over_base_bytes"
    ]
    assert missing_from(source, "phases.<phase>.duration_seconds", composed) == ["duration_seconds"]


# ---- names carry units ------------------------------------------------------------------------------


def unit_name(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    for stat in STAT_SUFFIXES:
        last = last.removesuffix(stat)
    return last


def is_numeric(m: Metric) -> bool:
    return m.kind != "label"


def test_numeric_names_end_in_their_unit() -> None:
    allowed = metrics.NUMERIC_LABELS | set(metrics.UNIT_EXCEPTIONS)
    bad = [
        m.name
        for m in metrics.all_metrics()
        if is_numeric(m) and m.name not in allowed and not m.rename
        and not unit_name(m.name).endswith(UNIT_SUFFIXES + DERIVED_SUFFIXES)
    ]  # fmt: skip
    assert bad == []


def test_the_unit_agrees_with_the_suffix() -> None:
    wrong = {}
    for m in metrics.all_metrics():
        expected = next((u for suffix, u in SUFFIX_UNIT if unit_name(m.name).endswith(suffix)), None)
        if expected is not None and metrics.base_unit(m.unit) != expected:
            wrong[m.name] = (m.unit, expected)
    assert wrong == {}


def test_exceptions_are_not_stale() -> None:
    for name in metrics.NUMERIC_LABELS | set(metrics.UNIT_EXCEPTIONS):
        assert is_numeric(metrics.get(name)), f"{name}: listed as an exception but not numeric"
        assert not unit_name(name).endswith(UNIT_SUFFIXES), f"{name}: carries a unit; drop it from the list"
    for m in metrics.all_metrics():
        if m.rename:
            assert not unit_name(m.name).endswith(UNIT_SUFFIXES), f"{m.name}: carries a unit; drop `rename`"


def test_breakdown_categories_are_the_trackers() -> None:
    listed = {n for n in names("record") if re.fullmatch(r"breakdown\.\w+_bytes", n)}
    assert listed == {f"breakdown.{c}_bytes" for c in CATEGORIES.values()} | {"breakdown.tensor_peak_bytes"}


# ---- the catalog drives compare, the record and the report --------------------------------------------


def test_compare_defaults_come_from_the_catalog() -> None:
    kinds = {"memory": MemoryPolicy, "time": TimePolicy, "quality": QualityPolicy}
    assert {n: type(p) for n, p in DEFAULT_METRICS.items()} == {
        m.name: kinds[str(m.gate)] for m in metrics.all_metrics() if m.gate
    }
    # the deterministic tensor peak is judged by default, step times and losses too
    assert isinstance(DEFAULT_METRICS["breakdown.tensor_peak_bytes"], MemoryPolicy)
    assert isinstance(DEFAULT_METRICS["step_time_s"], TimePolicy)
    assert isinstance(DEFAULT_METRICS["final_loss"], QualityPolicy)


def test_record_reads_a_results_row_by_catalog_name() -> None:
    line = json.dumps(make_record(breakdown={"tensor_peak_bytes": 80 * MiB}, loss=[3.0, 2.5]))
    record = metrics.Record.from_json(line)
    assert record.status == "ok" and record.is_baseline and record.device == "cpu"
    assert record.value("breakdown.tensor_peak_bytes") == 80 * MiB
    assert record.value("final_loss") == 2.5
    assert record.value("kl_divergence_nats") is None
    assert record.tensor_peak() == metrics.Headline("breakdown.tensor_peak_bytes", 80 * MiB)
    assert record.process_peak() == metrics.Headline("host_rss_peak_above_base_bytes", 300 * MiB)
    gpu = metrics.Record(make_record(gpu_peak=50 * MiB))
    assert gpu.tensor_peak().metric == "gpu_peak_allocated_bytes"
    assert gpu.process_peak().metric == "gpu_peak_reserved_bytes"


def test_adding_a_metric_is_one_catalog_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new figure the case process measures (here: written straight into the record) gets its doc row,
    its compare default, its record accessor and its report column from one entry."""
    entry = Metric(
        "widget_cache_bytes", "bytes", "bytes the widget cache holds after the measured steps",
        measured="case process", absent="absent without widgets", gate="memory", display="widget cache",
        column=11,
    )  # fmt: skip
    monkeypatch.setattr(catalog, "SECTIONS", (*catalog.SECTIONS, Section("Widgets", metrics=(entry,))))
    assert metrics.get("widget_cache_bytes").kind == "memory"
    assert (
        "| `widget_cache_bytes` | widget cache, MiB | bytes | memory | lower | memory |" in metrics_markdown()
    )
    assert isinstance(PolicyFile().for_suite(None)["widget_cache_bytes"], MemoryPolicy)  # compare judges it
    record = make_record(widget_cache_bytes=3 * MiB)
    assert metrics.Record(record).value("widget_cache_bytes") == 3 * MiB
    frame = savings(tidy(pd.DataFrame([flatten(record)])))
    html = savings_tables(frame, ROOT)
    assert "widget cache, MiB" in html and ">3.0<" in html
