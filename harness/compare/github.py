"""A Comparison as a pull-request comment (`harness compare BASE CUR --format github`).

What a reviewer must see comes first: the verdict line, then every gated verdict that fails or cannot
be decided, one bullet each, then the gated table (open), then everything else folded away.
"""

from __future__ import annotations

import html

from harness.compare.judge import Comparison, Verdict
from harness.compare.outputs import EXIT_MEANING, env_lines, fmt_change, fmt_value, ordered

# Marks a comment as harness's, so a CI step can find and update its own earlier comment.
MARKER = "<!-- harness-compare -->"


def _md(text: str) -> str:
    """Cell-safe markdown: no HTML, no column breaks, one line."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


HEADER = ("case", "metric", "status", "baseline", "current", "change", "detail")


def _row(v: Verdict) -> str:
    status = v.status + ("" if v.gated else " (not gated)")
    cells = (v.case_name, v.metric, status, fmt_value(v, v.baseline), fmt_value(v, v.current),
             fmt_change(v), v.detail)  # fmt: skip
    return "| " + " | ".join(_md(c) for c in cells) + " |"


def _table(rows: list[Verdict]) -> list[str]:
    return ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER), *(_row(v) for v in rows)]


def _bullet(v: Verdict) -> str:
    change = f" ({fmt_change(v)})" if v.change is not None else ""
    values = f"{_md(fmt_value(v, v.baseline))} → {_md(fmt_value(v, v.current))}{change}"
    return f"- **{_md(v.status)}** `{_md(v.case_name)}` {_md(v.metric)}: {values} {_md(v.detail)}".rstrip()


def _title(comparison: Comparison) -> str:
    code = comparison.exit_code
    icon = {0: "passed", 1: "FAILED", 3: "UNDECIDED"}[code]
    return f"### harness memory gate: {icon} (exit {code}: {EXIT_MEANING[code]})"


def to_github(comparison: Comparison) -> str:
    verdicts = ordered(comparison)
    gated = [v for v in verdicts if v.gated]
    urgent = [v for v in gated if v.fails or v.undecided]
    rest = [v for v in verdicts if not v.gated]
    counts = ", ".join(f"{n} {s}" for s, n in _gated_counts(gated).items()) or "no gated metric"
    lines = [MARKER, _title(comparison), "", f"Gated verdicts: {_md(counts)}.", ""]
    lines += [_bullet(v) for v in urgent]
    lines += [f"- {_md(line)}" for line in env_lines(comparison)]
    source = f"`{_md(comparison.baseline.source)}` → `{_md(comparison.current.source)}`"
    lines += ["", "<details open><summary>Gated verdicts (" + str(len(gated)) + ")</summary>", ""]
    lines += [*_table(gated), "", "</details>"]
    if rest:
        lines += ["", f"<details><summary>Shown, not gated ({len(rest)})</summary>", ""]
        lines += [*_table(rest), "", "</details>"]
    lines += ["", f"<sub>{source}</sub>"]
    return "\n".join(lines) + "\n"


def _gated_counts(gated: list[Verdict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in gated:
        out[v.status] = out.get(v.status, 0) + 1
    return out
