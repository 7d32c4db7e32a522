"""Results DataFrame (load_results) -> tidy tables the figures and the HTML draw from. Pure: no I/O.

Every row is one case in one run. "Peak memory" is the tensor figure where it exists (torch's
`gpu_peak_allocated_bytes`), else the process figure above its post-import base
(`host_rss_peak_above_base_bytes`); `peak_metric` names which, and ratios are only taken between rows
that measured the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

BASELINE = "baseline"
# Cases that differ only in techniques: each is compared against the baseline case with these equal.
GROUP_KEYS = ["run_id", "model_name", "workload_name", "batch_size", "seq_len", "device", "dtype"]
PEAK_METRICS = ("gpu_peak_allocated_bytes", "host_rss_peak_above_base_bytes")
# Quality in order of preference: a held-out figure beats the training loss when the case recorded one.
QUALITY_METRICS = ("heldout_loss_nats", "kl_divergence_nats", "final_loss")
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
METRIC_COLUMNS = [
    "host_rss_peak_above_base_bytes",
    "gpu_peak_allocated_bytes",
    "gpu_peak_reserved_bytes",
    "step_time_s_median",
    "step_time_s_iqr",
    "tokens_per_s",
    "heldout_loss_nats",
    "kl_divergence_nats",
]


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
    out = {col: row.get(col) for col in LABEL_COLUMNS + METRIC_COLUMNS}
    out["techniques_name"] = out["techniques_name"] or "+".join(techniques or []) or BASELINE
    out["is_baseline"] = (isinstance(techniques, list) and not techniques) or out[
        "techniques_name"
    ] == BASELINE
    out["final_loss"] = _last(row.get("loss"))
    out["peak_bytes"], out["peak_metric"] = _first_present(row, PEAK_METRICS)
    out["quality"], out["quality_metric"] = _first_present(out, QUALITY_METRICS)
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
    ok_base = base is not None and base["status"] == "ok"
    same_peak = ok_base and base is not None and base["peak_metric"] == case["peak_metric"]
    same_quality = ok_base and base is not None and base["quality_metric"] == case["quality_metric"]
    row = dict(case)
    row["peak_ratio"] = _ratio(case["peak_bytes"], base["peak_bytes"]) if same_peak and base else None
    row["step_time_ratio"] = (
        _ratio(case["step_time_s_median"], base["step_time_s_median"]) if ok_base and base else None
    )
    row["tokens_per_s_ratio"] = (
        _ratio(case["tokens_per_s"], base["tokens_per_s"]) if ok_base and base else None
    )
    quality_pair = same_quality and base is not None and not is_missing(case["quality"])
    row["quality_delta"] = float(case["quality"]) - float(base["quality"]) if quality_pair and base else None
    row["baseline_note"] = _baseline_note(base, same_peak or not ok_base)
    return row


def _baseline_note(base: dict[str, Any] | None, peak_comparable: bool) -> str:
    if base is None:
        return "no baseline case"
    if base["status"] != "ok":
        return f"baseline {base['status']}"
    return "" if peak_comparable else "baseline measured a different peak"


def savings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every case against the baseline of its group: memory and step-time ratios, quality delta."""
    baselines: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in records(frame[frame["is_baseline"]]):
        baselines.setdefault(tuple(row[k] for k in GROUP_KEYS), row)
    rows = [_saving_row(r, baselines.get(tuple(r[k] for k in GROUP_KEYS))) for r in records(frame)]
    extra = ["peak_ratio", "step_time_ratio", "tokens_per_s_ratio", "quality_delta", "baseline_note"]
    return with_nones(pd.DataFrame(rows, columns=[*frame.columns, *extra]))


def pareto_mask(memory: Sequence[float], speed: Sequence[float]) -> list[bool]:
    """True for points no other point beats: less or equal memory AND more or equal speed, one strictly."""
    points = list(zip(memory, speed, strict=True))

    def dominated(m: float, s: float) -> bool:
        return any(m2 <= m and s2 >= s and (m2 < m or s2 > s) for m2, s2 in points)

    return [not dominated(m, s) for m, s in points]


def groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label 'model / workload', rows) per model x workload, in first-seen order."""
    labels = frame["model_name"].astype(str) + " / " + frame["workload_name"].astype(str)
    return [(str(label), frame[labels == label]) for label in dict.fromkeys(labels)]


def has_breakdown(frame: pd.DataFrame) -> bool:
    cols = [f"{kind}.{c}_bytes" for kind in ("breakdown", "predicted") for c in BREAKDOWN_CATEGORIES]
    return bool(frame[cols].notna().to_numpy().any())
