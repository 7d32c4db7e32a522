"""The end-of-run table on hand-made records: fits 80 columns with a legend, readable at 160, never cuts."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from harness.summary import print_summary
from tests.fixtures_results import MiB, make_record

LONG = ("activation_checkpointing", "weight_only_quantization")


def records() -> list[dict[str, Any]]:
    return [
        make_record(peak=400 * MiB, breakdown={"tensor_peak_bytes": 300 * MiB}, heldout_loss_nats=4.5),
        make_record(
            techniques=LONG, peak=250 * MiB, breakdown={"tensor_peak_bytes": 150 * MiB}, heldout_loss_nats=4.6
        ),
        make_record(techniques=("sdpa_attention",), peak=330 * MiB, heldout_loss_nats=4.50001),
        make_record(techniques=("fsdp",), status="unsupported", error="needs 2 CUDA devices; " + "x" * 120),
    ]


def render(width: int, gated: frozenset[str] = frozenset({"breakdown.tensor_peak_bytes"})) -> str:
    out = io.StringIO()
    print_summary(records(), Console(file=out, width=width, force_terminal=False), gated=gated)
    return out.getvalue()


def test_fits_80_columns_with_a_legend_and_never_truncates_a_name() -> None:
    text = render(80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    # the long name wraps: the first column's pieces, read in order, give it back whole
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if "status" in line)
    cut = lines[header].index("status")
    first_column = "".join(line[:cut].strip() for line in lines[header + 2 :] if line.strip())
    assert "+".join(LONG) in first_column
    assert "…" not in text and "..." not in text
    assert "T   tensor peak, MiB: breakdown.tensor_peak_bytes (* gated)" in text
    assert "P   process peak, MiB: host_rss_peak_above_base_bytes" in text
    # the error is printed whole under the table, not cut to a column
    assert "fsdp: unsupported: something went wrong" in text or ("x" * 120) in text.replace("\n", "")


def test_ratios_quality_noise_and_the_gated_mark() -> None:
    text = render(160)
    header = next(line for line in text.splitlines() if "MiB" in line)
    assert "MiB *" in header  # the tensor peak column is the gated one
    row = next(line for line in text.splitlines() if line.startswith(" sdpa_attention"))
    cells = row.split()
    # no tensor peak (breakdown off) -> '-' and no ratio; process 330 / 400; quality +1e-5: inside noise
    assert cells[2:5] == ["-", "-", "330.0"] and cells[5] == "0.82" and cells[-1] == "="
    lora_row = next(line for line in text.splitlines() if line.startswith(" activation"))
    assert lora_row.split()[-1] == "+0.1"  # 4.6 - 4.5 nats: beyond noise
    assert "(* gated)" in text
    ungated = render(160, gated=frozenset())
    assert "MiB *" not in ungated and "gated" not in ungated


def test_a_disturbed_step_time_ratio_is_marked_and_explained() -> None:
    recs = records()
    recs[2]["step_time_vs_baseline_disturbed"] = True
    out = io.StringIO()
    print_summary(recs, Console(file=out, width=80, force_terminal=False), gated=frozenset())
    text = out.getvalue()
    row = next(line for line in text.splitlines() if line.startswith(" sdpa_attention"))
    assert "~" in row
    assert "'~' = step times disturbed by other work on the machine" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "'~'" not in render(80)  # nothing disturbed: no mark, no legend line


def test_a_host_figure_read_under_memory_pressure_is_marked_and_explained() -> None:
    """The kernel took the case's pages while it ran: its process peak and that ratio read low."""
    recs = records()
    why = "the kernel reclaimed 2.2 MiB of the case's file-backed pages in warmup (memory pressure ...)"
    recs[2].update(host_memory_disturbed=True, host_memory_disturbed_reason=why)
    out = io.StringIO()
    print_summary(recs, Console(file=out, width=160, force_terminal=False), gated=frozenset())
    text = out.getvalue()
    row = next(line for line in text.splitlines() if line.startswith(" sdpa_attention"))
    assert "330.0~" in row and "0.82~" in row  # the figure and its ratio; the tensor side has none
    assert "'~' on P = host memory read low: the kernel took the case's pages" in " ".join(text.split())
    assert "~" not in next(line for line in text.splitlines() if line.startswith(" activation"))


def test_a_case_that_failed_shows_no_figures_and_no_ratios() -> None:
    """Memory until a crash is no result: a failed case's 330 MiB would read as a 0.82x saving."""
    recs = records()
    recs[2].update(status="error", error="build: RuntimeError: shapes do not match")
    out = io.StringIO()
    print_summary(recs, Console(file=out, width=160, force_terminal=False), gated=frozenset())
    row = next(line for line in out.getvalue().splitlines() if line.startswith(" sdpa_attention"))
    assert "error" in row and "330.0" not in row and "0.82" not in row
    assert set(row.split()[2:]) == {"-"}, row


def test_a_diverged_case_says_so_beside_its_row() -> None:
    recs = records()
    sdpa = next(r for r in recs if r["techniques_name"] == "sdpa_attention")
    sdpa["loss"] = [5.5, float("nan"), float("nan")]
    out = io.StringIO()
    print_summary(recs, Console(file=out, width=160, force_terminal=False), gated=frozenset())
    assert "sdpa_attention: diverged: the last step's loss is not finite" in out.getvalue()


def test_the_legend_names_the_policy_that_decided_what_is_gated(tmp_path, monkeypatch) -> None:
    """Read from the working directory: the same run reads gated here and not there, so it says which."""
    from tests.conftest import ROOT

    def legend_of() -> str:
        out = io.StringIO()
        print_summary(records(), Console(file=out, width=160, force_terminal=False))
        return " ".join(out.getvalue().split())

    monkeypatch.chdir(ROOT)
    assert "* gated = judged by results/baselines/policy.yaml" in legend_of()
    monkeypatch.chdir(tmp_path)
    assert "* gated = judged by the built-in defaults (no results/baselines/policy.yaml here)" in legend_of()
