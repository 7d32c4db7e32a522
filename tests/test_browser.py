"""A generated report opened in headless Chromium: every chart draws, no JS errors, offline, a screenshot.

Installs nothing: skips where Debian's `chromium` is not on PATH (apt-get install chromium).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import build_report
from tests.fixtures_results import MiB, make_manifest, smoke_records, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    """(run-a alone: savings, Pareto, timelines, breakdown; both runs: the latest's charts plus history)"""
    root = tmp_path_factory.mktemp("browser")
    first = smoke_records("run-a")
    first[0]["breakdown"] = {
        "parameters_bytes": 12 * MiB,
        "activations_bytes": 290 * MiB,
        "other_bytes": 2 * MiB,
    }
    first[0]["predicted"] = {"parameters_bytes": 12 * MiB, "activations_bytes": 280 * MiB}
    first[2]["techniques_name"] = "<script>alert(1)</script>"
    first[1]["artifacts"] = {"flame": "cases/x/flame.html"}
    write_run(root / "results", first, make_manifest("run-a", "c1", "2025-01-01T00:00:00Z"))
    write_run(root / "results", smoke_records("run-b"), make_manifest("run-b", "c2", "2025-01-02T00:00:00Z"))
    single = build_report([root / "results" / "run-a"], root / "report.html", "html")
    return single, build_report([root / "results"], root / "history.html", "html")


@pytest.mark.parametrize(("which", "expected"), [(0, 5), (1, 7)])
def test_every_chart_renders_without_console_errors(report, tmp_path, which, expected):
    # GIVEN a generated report  WHEN Chromium runs its JS  THEN the page's own check counts every plot drawn
    page = report[which]
    assert f'data-expected="{expected}"' in page.read_text()
    done = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    status = re.search(r'id="harness-render-status"[^>]*>', done.stdout)
    assert status is not None, done.stdout[-2000:]
    tag = status.group(0)
    assert f'data-rendered="{expected}"' in tag and 'data-errors="0"' in tag and 'data-ok="true"' in tag, tag
    assert done.stdout.count('class="main-svg"') >= expected
    assert re.search(r'id="harness-render-status"[^>]*></p>', done.stdout)  # all fine: no debug text shown
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert "alert(1)" not in [s.strip() for s in re.findall(r"<script>(.*?)</script>", done.stdout)]


def test_screenshot_of_the_report(report, tmp_path):
    """The screenshot stays in pytest's temp dir (printed, to look at), never in the checkout."""
    shot = tmp_path / "screenshot.png"
    done = chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,3000", report[0].as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a drawn page, not a blank one
    print(f"screenshot: {shot}")


@pytest.fixture(scope="module")
def fit_page(tmp_path_factory) -> Path:
    """A hand-made fit run (tests/fixtures_fit.py): budgets that fit, one that nothing fits, an
    estimate-only cell, a combination named like a script."""
    from tests.fixtures_fit import CELLS, fit_lines, write_fit_run

    root = tmp_path_factory.mktemp("browser-fit")
    run = write_fit_run(root / "fit-run", fit_lines(CELLS))
    return build_report([run], root / "fit.html", "html")


@pytest.mark.parametrize("width", [1400, 700])
def test_fit_page_draws_heat_map_and_pareto_side_by_side_or_stacked(fit_page, tmp_path, width):
    """Both plots draw without console errors; side by side on a wide window, stacked on a narrow one.
    The screenshot stays in pytest's temp dir (printed, to look at)."""
    done = chromium(tmp_path / "profile", "--dump-dom", f"--window-size={width},1400", fit_page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    status = re.search(r'id="harness-render-status"[^>]*>', done.stdout)
    assert status is not None, done.stdout[-2000:]
    assert 'data-rendered="2"' in status.group(0) and 'data-ok="true"' in status.group(0), status.group(0)
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    # each plot's drawn width: about half the window side by side, about all of it stacked
    # (plotly's first svg of each plot is the one with the background)
    widths = [
        int(w) for w in re.findall(r'<svg class="main-svg"[^>]*width="(\d+)"[^>]*background', done.stdout)
    ]
    assert len(widths) == 2, widths
    if width == 1400:
        assert all(500 < w < 700 for w in widths), widths
    else:
        assert all(w > 600 for w in widths), widths
    shot = tmp_path / "fit.png"
    done = chromium(
        tmp_path / "profile2", f"--screenshot={shot}", f"--window-size={width},1400", fit_page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
