"""docs/metrics.md, generated from the catalog (`python -m harness.metrics --doc`). Pure: returns text."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from harness.metrics import catalog
from harness.metrics.base import Metric, Section
from harness.metrics.catalog import NUMERIC_LABELS, UNIT_EXCEPTIONS

WIDTH = 100
HEADER = (
    "name",
    "shown as",
    "unit",
    "kind",
    "better",
    "gate",
    "definition",
    "measured",
    "null / absent when",
)

TITLE = "# Metrics: every key a result record can carry (record_version 1)"
PREAMBLE = (
    "Generated from the metric catalog (`harness/metrics/catalog.py`) with "
    "`python -m harness.metrics --doc`; do not edit by hand. "
    "`tests/test_metrics_doc.py` fails when this page and the catalog differ, and "
    "`tests/test_metrics.py` checks the catalog against the keys real records carry. "
    "Why the figures are measured this way: [measurement.md](measurement.md); the file layout of a "
    "run: [results.md](results.md).",
)
CONVENTIONS = (
    "**Names.** Nested keys are written with dots, as `harness.metrics.record.flatten` (and so "
    "`load_results`) flattens them: `phases.build.host_rss_peak_bytes`. `<...>` stands for one dotted "
    "segment or one fragment of a name (`phases.<phase>.duration_s`). Lists are values, not flattened: "
    "`ranks[].<key>` names a key of the objects inside the `ranks` list.",
    "**Units** are in the name: `_bytes`, `_s` (seconds), `_count`, `_fraction` (0..1), `_nats`, "
    "`_flops`, `_flop_per_s`, `_per_s`, `_per_step`; a statistic follows the unit (`step_time_s_median`, "
    "`rank_host_rss_peak_bytes_max`). Bytes on disk always; MiB only on screen (`shown as` gives the "
    "header and unit tables use). Exceptions are listed at the end of this page.",
    "**Kind, better, gate.** `kind` groups figures (memory, time, throughput, compute, quality, count, "
    "ratio, label); `better` is the direction a comparison calls an improvement; `gate` is the "
    "judgement `harness compare` applies by default (`memory`: max(1 MiB, 0.5 %); `time`: bootstrap "
    "interval on the ratio of medians; `quality`: max(1e-5, 1e-4 x |baseline|)); a policy file "
    "overrides it (results/baselines/policy.yaml).",
    "**null vs absent.** A key written as `null` was attempted and could not be measured here: a "
    "`*_reason` key says why (`gpu_unavailable_reason`, `mfu_unavailable_reason`, ...). A key that is "
    "*absent* does not apply to the case (an unsupported case has no memory figures; only inference has "
    "`kl_divergence_nats`); where absence needs explaining, the last column says so.",
    "**Processes.** *parent* = the `harness run` process (it reads `/proc/<pid>/status` VmHWM, samples "
    "RSS and NVML, and merges the record); *case process* = `python -m harness.runner.child`, one per "
    "pass (a memory pass, then `repeats` timing passes); *rank* = a process under torchrun for "
    "multi-rank cases. Memory figures come from the memory pass (it stops once its per-step peak "
    "repeats); losses, quality, breakdown and technique metrics from the first timing pass, which "
    "runs every step (from the memory pass when there is no timing pass).",
    "**Phases** of a case process, ended by the marks it sends the parent: `startup` (process start to "
    "`imported`: interpreter, `import torch`, `torch._dynamo`, the techniques' `preload()`, CUDA init), "
    "`build` (model, optimizer, batches), `warmup`, `measured` (the timed steps), `extras` (after the "
    "timed steps: technique metrics, quality, breakdown, prediction; never part of a peak).",
)


def _para(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def _bullet(text: str) -> str:
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent="- ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(m: Metric) -> str:
    judged = m.kind != "label"
    cells = [
        f"`{m.name}`",
        _cell(m.header) if judged else "",
        _cell(m.unit),
        str(m.kind),
        str(m.better) if m.better != "none" else "",
        m.gate or "",
        _cell(m.definition),
        _cell(m.measured),
        _cell(m.absent),
    ]
    return "| " + " | ".join(cells) + " |"


def _section(section: Section) -> list[str]:
    lines = ["#" * section.level + " " + section.title, ""]
    for para in section.intro:
        lines += [_para(para), ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [_row(m) for m in section.metrics]
    lines.append("")
    for para in section.outro:
        lines += [_para(para), ""]
    return lines


def _renames(metrics: Iterable[Metric]) -> list[str]:
    lines = [
        "## Names that break the unit convention",
        "",
        _para(
            "Numeric names that do not end in a unit, and the rename proposed for each (the catalog's "
            "`rename` field; renaming edits the code and that entry together):"
        ),
        "",
        "| name | unit | proposed name |",
        "|---|---|---|",
    ]
    lines += [f"| `{m.name}` | {_cell(m.unit)} | `{m.rename}` |" for m in metrics if m.rename]
    accepted = "; ".join(f"`{n}` ({why})" for n, why in UNIT_EXCEPTIONS.items())
    labels = ", ".join(f"`{n}`" for n in sorted(NUMERIC_LABELS))
    lines += [
        "",
        _para(f"Accepted as they are: {accepted}; and labels that are numbers ({labels})."),
        "",
    ]
    return lines


def metrics_markdown() -> str:
    """The whole of docs/metrics.md."""
    lines = [TITLE, ""]
    lines += [_para(p) + "\n" for p in PREAMBLE]
    lines += ["## Conventions", *(_bullet(c) for c in CONVENTIONS), ""]
    for section in catalog.SECTIONS:
        lines += _section(section)
    lines += _renames(m for s in catalog.SECTIONS for m in s.metrics)
    return "\n".join(lines).rstrip("\n") + "\n"
