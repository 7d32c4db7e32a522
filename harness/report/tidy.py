"""Results DataFrame (load_results) -> tidy tables the figures and the HTML draw from. Pure: no I/O.

Every row is one case in one run. Which figures exist, their names, units and the headline memory
figures per device come from the metric catalog (harness.metrics): `tensor_peak_bytes` and
`process_peak_bytes` side by side, `peak_bytes` the first of them present (tensor first); ratios are
only taken between rows that measured the same figure, against the case's baseline as
`harness.case.baseline_key` defines it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from harness import metrics
from harness.case import baseline_key
from harness.compare.policy import DEFAULT_METRICS, QualityPolicy

BASELINE = "baseline"
# How tables and figures group cases (one table / chart per group); pairing uses baseline_key.
GROUP_KEYS = ["run_id", "model_name", "workload_name", "batch_size", "seq_len", "device", "dtype"]
QUALITY_METRICS = metrics.QUALITY_ORDER
BREAKDOWN_CATEGORIES = (
    "parameters",
    "buffers",
    "gradients",
    "optimizer_state",
    "activations",
    "temporaries",
    "other",
)
LABEL_COLUMNS = [
    "run_id",
    "run_started_at",
    "run_commit",
    "run_dir",
    "case_id",
    "case_name",
    "suite",
    "model_name",
    "workload_name",
    "workload_kind",
    "techniques_name",
    "batch_size",
    "seq_len",
    "device",
    "dtype",
    "status",
    "error",
    "timeline_file",
]


def metric_columns() -> list[str]:
    """Record figures the tables and figures read: every device's headline candidates, the catalog's
    table columns the record itself carries, and what the timelines and notes need. Read from the
    catalog at call time, so a new catalog column reaches the tables with no edit here."""
    return list(
        dict.fromkeys(
            [
                *(name for pair in metrics.HEADLINE_MEMORY.values() for names in pair for name in names),
                "host_rss_base_bytes",
                "step_time_s_iqr",
                "loss_max_rel_diff_vs_baseline",
                *metrics.QUALITY_ORDER[:-1],
                *(m.name for m in metrics.columns() if m.scope == "record"),
            ]
        )
    )


def is_missing(value: Any) -> bool:
    """None, NaN and pandas' NA all mean "not measured"."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _first_present(row: dict[str, Any], names: Sequence[str]) -> tuple[Any, str | None]:
    for name in names:
        value = row.get(name)
        if not is_missing(value):
            return value, name
    return None, None


def _last(values: Any) -> float | None:
    if isinstance(values, (list, tuple)) and values:
        return float(values[-1])
    return None


def _tidy_row(row: dict[str, Any]) -> dict[str, Any]:
    techniques = row.get("techniques")
    record = metrics.Record({k: v for k, v in row.items() if not is_missing(v)})
    out = {col: row.get(col) for col in LABEL_COLUMNS + metric_columns()}
    out["techniques_name"] = out["techniques_name"] or "+".join(techniques or []) or BASELINE
    out["is_baseline"] = (isinstance(techniques, list) and not techniques) or out[
        "techniques_name"
    ] == BASELINE
    out["baseline_key"] = _baseline_key(row)
    out["final_loss"] = record.value("final_loss")
    # Kept apart: tables turn NaN into "missing", and a diverged loss is a finding, not a gap.
    out["final_loss_not_finite"] = isinstance(out["final_loss"], float) and not math.isfinite(
        out["final_loss"]
    )
    tensor, process = record.tensor_peak(), record.process_peak()
    out["tensor_peak_bytes"], out["tensor_peak_metric"] = tensor.value, tensor.metric
    out["process_peak_bytes"], out["process_peak_metric"] = process.value, process.metric
    headline = tensor if tensor.metric is not None else process
    out["peak_bytes"], out["peak_metric"] = headline.value, headline.metric
    # A generate case's step loss is the NLL of its own greedy tokens: no measure of quality (a lossy
    # change can lower it), so without the quality pass its column stays empty.
    own = [m for m in QUALITY_METRICS if not (m == "final_loss" and row.get("workload_kind") == "generate")]
    out["quality"], out["quality_metric"] = _first_present(out, own)
    # The record's own paired quality difference (same held-out batches as its baseline) and its label.
    # ... and whether it differs from its baseline in more than the technique (ranks, per-rank batch).
    # ... and what the step-time ratio cell says beside its value (disturbed, why, interval, CPU time).
    for name in (
        "quality_delta_nats",
        "quality_change",
        "baseline_ratios_comparable",
        "baseline_ratio_null_reason",
        "step_time_vs_baseline_disturbed",
        "step_time_vs_baseline_ci95_low_ratio",
        "step_time_vs_baseline_ci95_high_ratio",
        "step_cpu_time_vs_baseline_ratio",
        "step_time_disturbed_reason",
        "host_memory_disturbed_reason",  # ... and whether memory pressure lowered its host figures
        "technique_note",  # ... and what a technique left undone (layers kept in full precision)
    ):
        out[name] = row.get(name)
    out["node_host"] = row.get("node.host")  # which machine ran it (an executor's node)
    out["host_memory_scope"] = row.get("host_memory_scope")  # a multi-rank case: its ranks' RSS
    # In a frame of several runs every row has every run's artefact columns; the missing ones are NaN.
    out["artifacts"] = {
        k.removeprefix("artifacts."): v
        for k, v in row.items()
        if k.startswith("artifacts.") and not is_missing(v)
    }
    for kind in ("breakdown", "predicted"):
        for cat in BREAKDOWN_CATEGORIES:
            out[f"{kind}.{cat}_bytes"] = row.get(f"{kind}.{cat}_bytes")
    return out


def _baseline_key(row: dict[str, Any]) -> str:
    """The run and harness.case.baseline_key of the record's spec; records without a spec pair by labels."""
    spec = {k.removeprefix("spec."): v for k, v in row.items() if k.startswith("spec.")}
    labels = {k: row.get(k) for k in GROUP_KEYS}
    return f"{row.get('run_id')}|" + baseline_key({**labels, **spec} if spec else labels)


def quality_cell(delta: Any, noise: Any) -> str:
    """A quality change; `=` when it is inside the noise band of its gate (no change to speak of)."""
    if is_missing(delta):
        return "-"
    if not is_missing(noise) and abs(float(delta)) <= float(noise):
        return "="
    return metrics.get("quality_delta").show(delta)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with str keys (every column name here is a str)."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per case and run with stable columns, whatever optional fields the records carried."""
    rows = [_tidy_row(r) for r in records(raw)]
    frame = pd.DataFrame(rows, columns=list(_tidy_row({}).keys()))
    return sort_runs(with_nones(frame))


def with_nones(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns with None for "not measured", so NaN never leaks into tables as a number."""
    return frame.astype(object).where(frame.notna(), None)


def sort_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs in time order (then commit, then id); within a run by model, workload, baseline first."""
    key = frame.assign(
        _t=frame["run_started_at"].fillna("").astype(str),
        _c=frame["run_commit"].fillna("").astype(str),
        _b=[not b for b in frame["is_baseline"]],
    )
    order = ["_t", "_c", "run_id", "model_name", "workload_name", "_b", "techniques_name", "case_name"]
    ordered = key.sort_values(order, kind="stable")
    return ordered.drop(columns=["_t", "_c", "_b"]).reset_index(drop=True)


def run_order(frame: pd.DataFrame) -> list[str]:
    """Run ids oldest first (the frame is already sorted by sort_runs)."""
    return list(dict.fromkeys(frame["run_id"]))


def latest_run(frame: pd.DataFrame) -> pd.DataFrame:
    runs = run_order(frame)
    return frame[frame["run_id"] == runs[-1]].reset_index(drop=True) if runs else frame


def _ratio(num: Any, den: Any) -> float | None:
    if is_missing(num) or is_missing(den) or float(den) == 0.0:
        return None
    return float(num) / float(den)


def _saving_row(case: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    # Figures of a case that did not end ok (memory until it crashed, a step or two) are no result: a
    # 5 MiB peak of a case that failed in its build would read as a 0.19x saving.
    ok_base = base is not None and base["status"] == "ok" and case["status"] == "ok"
    row = dict(case)
    if case["status"] != "ok":
        for name in ("tensor_peak_bytes", "process_peak_bytes", "peak_bytes", "step_time_s_median",
                     "tokens_per_s", "quality"):  # fmt: skip
            row[name] = None
    for figure in ("tensor_peak", "process_peak", "peak"):
        same = ok_base and base is not None and base[f"{figure}_metric"] == case[f"{figure}_metric"]
        row[f"{figure}_ratio"] = (
            _ratio(case[f"{figure}_bytes"], base[f"{figure}_bytes"]) if same and base else None
        )
    row["step_time_ratio"] = (
        _ratio(case["step_time_s_median"], base["step_time_s_median"]) if ok_base and base else None
    )
    row["tokens_per_s_ratio"] = (
        _ratio(case["tokens_per_s"], base["tokens_per_s"]) if ok_base and base else None
    )
    same_quality = ok_base and base is not None and base["quality_metric"] == case["quality_metric"]
    quality_pair = same_quality and base is not None and not is_missing(case["quality"])
    row["quality_delta"] = float(case["quality"]) - float(base["quality"]) if quality_pair and base else None
    row["quality_noise"] = (
        _quality_noise(case["quality_metric"], base["quality"]) if quality_pair and base else None
    )
    row.update(_paired_quality(case))
    row["baseline_host_memory_disturbed_reason"] = base.get("host_memory_disturbed_reason") if base else None
    peak_comparable = not ok_base or (base is not None and base["peak_metric"] == case["peak_metric"])
    row["baseline_note"] = _baseline_note(base, peak_comparable)
    if case.get("final_loss_not_finite") is True:  # ok as a run, yet no model to use
        row["baseline_note"] = "diverged: the last step's loss is not finite"
    note: Any = case.get("technique_note")
    if isinstance(note, str) and note:
        row["baseline_note"] = "; ".join(n for n in (row["baseline_note"], note) if n)
    if case.get("baseline_ratios_comparable") is False:  # a ratio of unlike cases is never shown
        for name in ("tensor_peak_ratio", "process_peak_ratio", "peak_ratio", "step_time_ratio",
                     "tokens_per_s_ratio"):  # fmt: skip
            row[name] = None
        row["baseline_note"] = str(case.get("baseline_ratio_null_reason") or "differs from its baseline")
    return row


# "about this": the ratio follows the machine's load as much as the technique (not "*": that marks gated).
DISTURBED_MARK = "~"


def time_ratio_detail(row: Mapping[str, Any]) -> tuple[str, str]:
    """(mark, explanation) for a step-time ratio cell: `~` when the case's or its baseline's times were
    disturbed by other work on the machine, and the ratio's 95 % interval and CPU-time ratio to read."""
    parts = []
    low: Any = row.get("step_time_vs_baseline_ci95_low_ratio")
    high: Any = row.get("step_time_vs_baseline_ci95_high_ratio")
    if not is_missing(low) and not is_missing(high):
        parts.append(f"95 % interval {float(low):.2f}-{float(high):.2f}")
    cpu: Any = row.get("step_cpu_time_vs_baseline_ratio")
    if not is_missing(cpu):
        parts.append(f"CPU-time ratio {float(cpu):.2f}")
    disturbed = row.get("step_time_vs_baseline_disturbed") is True
    if disturbed:
        why = row.get("step_time_disturbed_reason")
        parts.insert(
            0, "disturbed" + (f" ({why})" if not is_missing(why) and why else " (this case or its baseline)")
        )
    return (DISTURBED_MARK if disturbed else ""), "; ".join(parts)


def cell_mark(name: str, row: Mapping[str, Any]) -> tuple[str, str]:
    """(mark, explanation) for a table cell of metric `name`: a step-time ratio's (time_ratio_detail),
    or `~` on a host memory figure (or its ratio) that memory pressure lowered (the case's or, for a
    ratio, its baseline's: host_memory_disturbed); ("", "") for every other cell."""
    if name == "step_time_ratio":
        return time_ratio_detail(row)
    figure = name.removesuffix("_bytes").removesuffix("_ratio")
    if figure not in ("process_peak", "peak") or not str(row.get(f"{figure}_metric") or "").startswith(
        "host"
    ):
        return "", ""
    sides = [("", row.get("host_memory_disturbed_reason"))]
    if name.endswith("_ratio"):
        sides.append(("baseline: ", row.get("baseline_host_memory_disturbed_reason")))
    whys = [f"{who}{why}" for who, why in sides if not is_missing(why) and why]
    return (DISTURBED_MARK, "disturbed: " + "; ".join(whys)) if whys else ("", "")


def memory_disturbed(row: Mapping[str, Any]) -> bool:
    """Whether any host memory cell of the row carries the memory-pressure mark (cell_mark)."""
    cells = ("process_peak_bytes", "process_peak_ratio", "peak_bytes", "peak_ratio")
    return any(cell_mark(name, row)[0] for name in cells)


MEMORY_DISTURBED_NOTE = "host memory read low: the kernel took the case's pages under memory pressure"


def _paired_quality(case: dict[str, Any]) -> dict[str, Any]:
    """Where the case measured its quality difference paired over the same held-out batches, with a
    bootstrap interval (harness.analysis.pairing), that difference and its verdict replace the
    difference of two separately drawn figures: inside its interval it reads as no change at all."""
    delta, verdict = case.get("quality_delta_nats"), case.get("quality_change")
    if delta is None or is_missing(delta) or is_missing(verdict):
        return {}
    unmeasurable = verdict == "no measurable change"
    return {"quality_delta": float(delta), "quality_noise": abs(float(delta)) if unmeasurable else 0.0}


def _quality_noise(metric: str, base_value: Any) -> float:
    """The band a quality change inside is noise: the compare gate's tolerance for that metric."""
    policy = DEFAULT_METRICS.get(metric)
    tol = policy if isinstance(policy, QualityPolicy) else QualityPolicy()
    return max(tol.abs_tol, tol.rel * abs(float(base_value)))


def _baseline_note(base: dict[str, Any] | None, peak_comparable: bool) -> str:
    if base is None:
        return "no baseline case"
    if base["status"] != "ok":
        return f"baseline {base['status']}"
    return "" if peak_comparable else "baseline measured a different peak"


SAVINGS_COLUMNS = [
    "tensor_peak_ratio",
    "process_peak_ratio",
    "peak_ratio",
    "step_time_ratio",
    "tokens_per_s_ratio",
    "quality_delta",
    "quality_noise",
    "baseline_note",
    "baseline_host_memory_disturbed_reason",
]


def savings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every case against its baseline (harness.case.baseline_key): memory and time ratios, quality change."""
    baselines: dict[str, dict[str, Any]] = {}
    for row in records(frame[frame["is_baseline"]]):
        baselines.setdefault(row["baseline_key"], row)
    rows = [_saving_row(r, baselines.get(r["baseline_key"])) for r in records(frame)]
    return with_nones(pd.DataFrame(rows, columns=[*frame.columns, *SAVINGS_COLUMNS]))


def pareto_mask(memory: Sequence[float], speed: Sequence[float]) -> list[bool]:
    """True for points no other point beats: less or equal memory AND more or equal speed, one strictly."""
    points = list(zip(memory, speed, strict=True))

    def dominated(m: float, s: float) -> bool:
        return any(m2 <= m and s2 >= s and (m2 < m or s2 > s) for m2, s2 in points)

    return [not dominated(m, s) for m, s in points]


def groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label 'model / workload', rows) per model x workload, in first-seen order. When the cases ran on
    more than one machine (a cluster executor) the label names the group's node(s): times of different
    machines are not comparable, and a reader must see which is which."""
    labels = frame["model_name"].astype(str) + " / " + frame["workload_name"].astype(str)
    hosts = frame["node_host"] if "node_host" in frame else pd.Series([None] * len(frame), index=frame.index)
    several = hosts.dropna().nunique() > 1
    out = []
    for label in dict.fromkeys(labels):
        rows = frame[labels == label]
        if several:
            names = sorted({str(h) for h in hosts[labels == label].dropna()})
            label = f"{label} · node {', '.join(names)}" if names else label
        out.append((str(label), rows))
    return out


def has_breakdown(frame: pd.DataFrame) -> bool:
    cols = [f"{kind}.{c}_bytes" for kind in ("breakdown", "predicted") for c in BREAKDOWN_CATEGORIES]
    return bool(frame[cols].notna().to_numpy().any())
