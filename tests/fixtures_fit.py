"""A hand-made fit run (fit.jsonl lines as harness/fit/run.py writes them), so report tests need no
case processes, and the figure JSON of a generated page read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
BUDGETS = {"200MiB": (200 * MiB, "bytes"), "host": (16 * 1024 * MiB, "host"), "1MiB": (MiB, "bytes")}
PEAK_KIND = {"bytes": "host_rss_peak_above_base_bytes", "host": "host_rss_peak_bytes"}
# (combination, budget) -> (largest, peak MiB at it, tokens/s there, method of the probe at it)
CELLS: dict[tuple[str, str], tuple[int, float | None, float | None, str]] = {
    ("m/w/baseline", "200MiB"): (10, 190.0, 400.0, "run"),
    ("m/w/ckpt", "200MiB"): (36, 196.0, 405.0, "run"),
    ("m/w/lora", "200MiB"): (4, 150.0, 300.0, "run"),
    ("m/w/slow", "200MiB"): (8, 195.0, 200.0, "run"),  # dominated by baseline: more memory, less speed
    ("m/w/baseline", "host"): (200, 8000.0, 500.0, "run"),
    ("m/w/ckpt", "host"): (700, 9000.0, None, "estimate"),  # estimate-only: no throughput
    ("m/w/<script>alert(1)</script>", "200MiB"): (0, None, None, "run"),
}
# The non-dominated (peak MiB, tokens/s) points of CELLS, worked out by hand.
FRONT = [(150.0, 300.0), (190.0, 400.0), (196.0, 405.0), (8000.0, 500.0)]


def fit_lines(
    cells: Mapping[tuple[str, str], tuple[int, float | None, float | None, str]],
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    combos = dict.fromkeys(c for c, _ in cells)
    for (combo, budget), (largest, peak, tps, method) in cells.items():
        size, kind = BUDGETS[budget]
        base = {"combination": combo, "budget": budget, "budget_bytes": size, "budget_kind": kind}
        base["axis"] = "batch_size"
        value = max(largest, 1)
        peak_kind = PEAK_KIND[kind] if method == "run" else "estimated.tensor_peak_bytes"
        lines.append(
            {
                "record_kind": "fit_probe", **base, "case_id": f"{combo}-{value}", "value": value,
                "method": method, "status": "ok" if method == "run" else "estimated", "error": None,
                "fits": largest >= 1, "peak_bytes": int((peak if peak is not None else 2 * size / MiB) * MiB),
                "peak_kind": peak_kind, "tokens_per_s": tps,
            }
        )  # fmt: skip
        lines.append(
            {
                "record_kind": "fit_answer", **base, "model_name": "m", "workload_name": "w",
                "techniques_name": combo.split("/", 2)[2], "device": "cpu", "axis_maximum": 4096,
                "method": method, "largest": largest, "first_failing": largest + 1, "at_axis_maximum": False,
                "probes": [value], "reason": None, "tokens_per_s": tps,
            }
        )  # fmt: skip
    # one budget nothing fits, for every combination
    for combo in combos:
        size, kind = BUDGETS["1MiB"]
        lines.append(
            {
                "record_kind": "fit_answer", "combination": combo, "budget": "1MiB", "budget_bytes": size,
                "budget_kind": kind, "axis": "batch_size", "method": "run", "largest": 0,
                "first_failing": 1, "reason": "does not fit at 1", "tokens_per_s": None,
            }
        )  # fmt: skip
    return lines


def write_fit_run(folder: Path, lines: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"run_id": folder.name, "kind": "fit"}))
    (folder / "fit.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def page_figures(html: str) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """(data, layout) of every plotly figure in a page, in page order, read from its Plotly.newPlot call."""
    decoder = json.JSONDecoder()
    figures = []
    start = 0
    while (at := html.find("Plotly.newPlot(", start)) >= 0:
        pos = at + len("Plotly.newPlot(")
        values = []
        for _ in range(3):  # the div id, the data, the layout
            while html[pos] in " \n\t,":
                pos += 1
            value, pos = decoder.raw_decode(html, pos)
            values.append(value)
        figures.append((values[1], values[2]))
        start = pos
    return figures
