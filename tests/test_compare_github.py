"""`harness compare --format github`: the pull-request comment puts an injected regression first."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from tests.fixtures_results import MiB, make_manifest, smoke_records, write_run

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _away_from_the_committed_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --policy, compare reads results/baselines/policy.yaml from the working directory (which
    gates the tensor peak, not host RSS); these tests judge the built-in defaults."""
    monkeypatch.chdir(tmp_path)


def _runs(tmp_path: Path, bump: int) -> tuple[Path, Path]:
    base = write_run(tmp_path / "r", smoke_records())
    cur_records = smoke_records("run-b")
    cur_records[1]["host_rss_peak_above_base_bytes"] += bump  # ci/train/activation_checkpointing
    return base, write_run(tmp_path / "r", cur_records, make_manifest("run-b"))


def test_an_injected_regression_is_in_the_first_lines(tmp_path: Path, capsys: Capture) -> None:
    base, cur = _runs(tmp_path, 50 * MiB)
    assert main(["compare", str(base), str(cur), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "<!-- harness-compare -->"
    assert lines[1].startswith("### harness memory gate: FAILED (exit 1")
    first = "\n".join(lines[:6])
    assert "**regressed** `ci/train/activation_checkpointing` host_rss_peak_above_base_bytes" in first
    assert "250.00 MiB → 300.00 MiB (+20.00%)" in first


def test_a_clean_run_says_passed_and_folds_the_rest(tmp_path: Path, capsys: Capture) -> None:
    base, cur = _runs(tmp_path, 0)
    assert main(["compare", str(base), str(cur), "--format", "github"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("### harness memory gate: passed (exit 0")
    assert "<details open><summary>Gated verdicts" in out
    assert "**regressed**" not in out


def test_user_strings_cannot_break_the_table_or_inject_html(tmp_path: Path, capsys: Capture) -> None:
    records = smoke_records()
    records[0]["case_name"] = "ci/<script>x</script>|col"
    base = write_run(tmp_path / "r", records)
    cur_records = smoke_records("run-b")
    cur_records[0]["case_name"] = records[0]["case_name"]
    cur_records[0]["host_rss_peak_above_base_bytes"] += 50 * MiB
    cur = write_run(tmp_path / "r", cur_records, make_manifest("run-b"))
    main(["compare", str(base), str(cur), "--format", "github"])
    out = capsys.readouterr().out
    assert "<script>" not in out and "&lt;script&gt;" in out and "\\|col" in out
