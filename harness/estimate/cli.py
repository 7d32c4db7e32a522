"""`harness estimate SUITE`: every case's device memory from a fake-tensor run, on any machine.

Writes `<results>/<run-id>/estimates.jsonl` (one `estimate` record per case, never a results.jsonl, so
no estimate is read as a measurement) and prints a table; with `--against RUN` also measured / estimated
for the cases that run measured (tensor peak on CPU, allocated and reserved on CUDA).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK

ESTIMATES = "estimates.jsonl"
CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")


def add_parser(sub: Any) -> None:
    e = sub.add_parser(
        "estimate", help="device memory of every case from a fake-tensor run (no GPU, no real parameters)"
    )
    e.add_argument("suite", type=Path)
    e.add_argument("--results", type=Path, default=Path("results"), help="where the estimate run goes")
    e.add_argument("--against", type=Path, help="a measured run of the same suite: print measured/estimated")
    e.set_defaults(func=cmd_estimate)


def cmd_estimate(args: argparse.Namespace) -> int:
    from harness.console import table_console
    from harness.errors import HarnessError
    from harness.estimate import estimate_case
    from harness.results.store import RunStore
    from harness.suite.load import load_suite

    suite = load_suite(args.suite)
    measured = _measured(args.against) if args.against else {}
    if args.against and not measured.keys() & {c.case_id for c in suite.cases}:
        raise HarnessError(
            f"--against {args.against}: holds no ok case of {args.suite} (a run of another suite, or of "
            "an edited one?); measure this suite with `harness run` and pass that run"
        )
    store = RunStore.create(args.results, f"{suite.name}-estimate", {"suite": suite.name, "kind": "estimate"})
    records = []
    with open(store.path / ESTIMATES, "a") as out:
        for case in suite.cases:
            record = estimate_case(case, store.run_id)
            out.write(json.dumps(record) + "\n")
            out.flush()
            records.append(record)
    table_console().print(estimate_table(records, measured))
    print(f"estimates: {store.path / ESTIMATES}  ({len(records)} cases)")
    return EXIT_OK


def _measured(path: Path) -> dict[str, dict[str, Any]]:
    from harness.results.load import read_run

    return {str(r["case_id"]): r for r in read_run(path).records if r.get("status") == "ok"}


def ratios(record: dict[str, Any], measured: dict[str, Any]) -> dict[str, float | None]:
    """measured / estimated: the tensor peak against the measured breakdown's, and on CUDA the
    allocator's allocated and reserved peaks against the estimate's."""
    est = record.get("estimated") or {}

    def ratio(m: Any, e: Any) -> float | None:
        return m / e if isinstance(m, (int, float)) and isinstance(e, (int, float)) and e > 0 else None

    breakdown = measured.get("breakdown") or {}
    return {
        "tensor_peak_measured_over_estimated": ratio(
            breakdown.get("tensor_peak_bytes"), est.get("tensor_peak_bytes")
        ),
        "gpu_allocated_measured_over_estimated": ratio(
            measured.get("gpu_peak_allocated_bytes"), est.get("gpu_peak_allocated_bytes")
        ),
        "gpu_reserved_measured_over_estimated": ratio(
            measured.get("gpu_peak_reserved_bytes"), est.get("gpu_peak_reserved_bytes")
        ),
    }


def _mib(v: Any) -> str:
    return f"{v / 2**20:,.1f}" if isinstance(v, (int, float)) else "-"


def estimate_table(records: list[dict[str, Any]], measured: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(title="estimated tensor peak by category (MiB); device total = reserved + CUDA context")
    t.add_column("case", overflow="fold")  # wrapped, never cut: "llama/train/s..." could be two cases
    t.add_column("status", overflow="fold")
    for c in (*CATEGORIES, "tensor peak", "device total", "s"):
        t.add_column(c, justify="right")
    if measured:
        t.add_column("measured/est", justify="right")
    for r in records:
        est = r.get("estimated") or {}
        row = [r["case_name"], r["status"] if r["status"] == "estimated" else f"{r['status']}: {r['error']}"]
        row += [_mib(est.get(f"{c}_bytes")) for c in CATEGORIES]
        row += [_mib(est.get("tensor_peak_bytes")), _mib(est.get("gpu_device_total_bytes"))]
        row.append(f"{r['estimate_wall_s']:.1f}")
        if measured:
            m = measured.get(r["case_id"])
            q = ratios(r, m) if m else {}
            vals = [f"{k.split('_')[0]} {v:.3f}" for k, v in q.items() if v is not None]
            row.append(", ".join(vals) or "-")
        t.add_row(*row)
    return t
