"""A Comparison -> what people and CI read: a terminal table (rich), markdown, JUnit XML, JSON."""

from __future__ import annotations

import html
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.compare.judge import (
    FAILED,
    IMPROVED,
    INSUFFICIENT,
    MISSING,
    NEW,
    NOT_COMPARABLE,
    QUALITY_ENV,
    REGRESSED,
    STATUSES,
    Comparison,
    Verdict,
)
from harness.compare.snapshot import Metric

MiB = 1024 * 1024
STYLE = {
    REGRESSED: "bold red",
    FAILED: "bold red",
    IMPROVED: "green",
    INSUFFICIENT: "yellow",
    NOT_COMPARABLE: "yellow",
}
EXIT_MEANING = {
    0: "no regression",
    1: "regression",
    3: "insufficient data: a gated metric could not be judged",
}


def fmt_value(v: Verdict, value: Metric) -> str:
    """Bytes as MiB, sample lists as their median and count, anything else as a short number."""
    if value is None:
        return "-"
    if isinstance(value, list):
        ordered = sorted(value)
        return f"{ordered[len(ordered) // 2]:.4g} s (n={len(value)})"
    if v.kind == "memory":
        return f"{value / MiB:.2f} MiB"
    return f"{value:.6g}"


def fmt_change(v: Verdict) -> str:
    return "" if v.change is None else f"{v.change:+.2%}"


def ordered(comparison: Comparison) -> list[Verdict]:
    """Worst first: the order of STATUSES, then case and metric."""
    rank = {s: i for i, s in enumerate(STATUSES)}
    return sorted(comparison.verdicts, key=lambda v: (rank[v.status], v.case_name, v.metric))


def headline(comparison: Comparison) -> str:
    """Counts of gated verdicts only (those decide the exit code); ungated rows are counted apart."""
    counts = ", ".join(f"{n} {s}" for s, n in comparison.counts().items()) or "no gated verdicts"
    shown = comparison.ungated_count
    extra = f" ({shown} not gated, shown only)" if shown else ""
    code = comparison.exit_code
    return f"{counts}{extra}. Exit {code}: {EXIT_MEANING[code]}."


def env_lines(comparison: Comparison) -> list[str]:
    def blocked(k: str) -> str:
        return (
            "shown only (--allow-env-change)"
            if comparison.allow_env_change
            else "quality, memory and time not judged"
            if k in QUALITY_ENV
            else "memory and time not judged"
        )

    return [
        f"environment differs: {k} {b} -> {c} ({blocked(k)})" for k, (b, c) in comparison.env_diff.items()
    ]


def render_terminal(comparison: Comparison, console: Console, *, all_rows: bool = False) -> None:
    """The table (unchanged rows folded into a count unless all_rows), env differences, the headline."""
    table = Table(title=f"{comparison.baseline.source} -> {comparison.current.source}")
    for col in ("case", "metric", "status", "baseline", "current", "change", "detail"):
        table.add_column(col, overflow="fold")
    rows = [v for v in ordered(comparison) if all_rows or v.status != "unchanged"]
    for v in rows:
        style = STYLE.get(v.status, "")
        status = v.status + ("" if v.gated else " (not gated)")
        table.add_row(v.case_name, v.metric, status, fmt_value(v, v.baseline), fmt_value(v, v.current),
                      fmt_change(v), v.detail, style=style)  # fmt: skip
    hidden = len(comparison.verdicts) - len(rows)
    if rows:
        console.print(table, markup=False)
    if hidden:
        console.print(f"{hidden} unchanged case x metric verdicts not shown", markup=False)
    for line in env_lines(comparison):
        console.print(line, style="yellow", markup=False)
    console.print(headline(comparison), markup=False)


def _md(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def to_markdown(comparison: Comparison) -> str:
    """A job-summary section: headline, environment differences, then every verdict that is not unchanged."""
    lines = ["## harness compare", "", _md(headline(comparison)), ""]
    lines += [f"- {_md(line)}" for line in env_lines(comparison)]
    rows = [v for v in ordered(comparison) if v.status != "unchanged"]
    if rows:
        lines += [
            "",
            "| case | metric | status | baseline | current | change | detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in rows:
            cells = [v.case_name, v.metric, v.status + ("" if v.gated else " (not gated)"),
                     fmt_value(v, v.baseline), fmt_value(v, v.current), fmt_change(v), v.detail]  # fmt: skip
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _testcase(suite: ET.Element, v: Verdict) -> None:
    case = ET.SubElement(suite, "testcase", classname=v.case_name, name=v.metric, time="0")
    values = f"{fmt_value(v, v.baseline)} -> {fmt_value(v, v.current)} {fmt_change(v)}"
    message = f"{v.status}: {values} {v.detail}".strip()
    if v.fails:
        ET.SubElement(case, "failure", message=message, type=v.status).text = message
    elif v.status in (INSUFFICIENT, NOT_COMPARABLE, NEW, MISSING) or not v.gated:
        ET.SubElement(case, "skipped", message=message)
    else:
        ET.SubElement(case, "system-out").text = message


def to_junit(comparison: Comparison) -> str:
    """One testcase per case x metric: <failure> where it regressed or failed, <skipped> where not judged."""
    verdicts = ordered(comparison)
    failures = sum(v.fails for v in verdicts)
    skipped = sum(
        1
        for v in verdicts
        if not v.fails and (v.status in (INSUFFICIENT, NOT_COMPARABLE, NEW, MISSING) or not v.gated)
    )
    attrs = {"name": "harness compare", "tests": str(len(verdicts)), "failures": str(failures), "errors": "0",
             "skipped": str(skipped)}  # fmt: skip
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", attrs)
    for v in verdicts:
        _testcase(suite, v)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "exit_code": comparison.exit_code,
        "counts": comparison.counts(),
        "baseline": {"source": comparison.baseline.source, "run": comparison.baseline.run},
        "current": {"source": comparison.current.source, "run": comparison.current.run},
        "env_diff": {k: list(pair) for k, pair in comparison.env_diff.items()},
        "allow_env_change": comparison.allow_env_change,
        "verdicts": [asdict(v) | {"fails": v.fails, "undecided": v.undecided} for v in ordered(comparison)],
    }


def json_text(comparison: Comparison) -> str:
    """Strict JSON: a NaN or infinite figure is written as null (its verdict's detail says what it was)."""
    return json.dumps(_finite_only(to_json(comparison)), indent=1, sort_keys=True, allow_nan=False) + "\n"


def _finite_only(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value
