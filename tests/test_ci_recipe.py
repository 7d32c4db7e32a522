"""The CI recipe in docs/ci: valid workflow files, harness commands that parse, a comment that renders."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from harness.cli import build_parser
from harness.compare import compare_snapshots
from harness.compare.github import to_github
from harness.compare.policy import load_policy
from harness.compare.snapshot import load_snapshot
from tests.fixtures_results import MiB, make_manifest, smoke_records, write_run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ci"
RECIPES = [("github-actions.yml", "vendor.github-workflows"), ("gitlab-ci.yml", "vendor.gitlab-ci")]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.parametrize(("name", "schema"), RECIPES)
def test_recipe_validates_against_the_platforms_schema(name: str, schema: str) -> None:
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(DOCS / name)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _harness_commands(name: str) -> list[list[str]]:
    doc = yaml.safe_load((DOCS / name).read_text())
    lines: list[str] = []
    for job in doc["jobs"].values() if "jobs" in doc else [v for v in doc.values() if isinstance(v, dict)]:
        for step in job.get("steps", []) or [{"run": "\n".join(job.get("script", []))}]:
            lines += str(step.get("run", "")).replace("\\\n", " ").splitlines()
    cmds = []
    for line in lines:
        for part in line.split(";"):
            words = shlex.split(part.split("||")[0].split(">")[0])
            if words and words[0] == "harness":
                cmds.append(words[1:])
    return cmds


@pytest.mark.parametrize(("name", "schema"), RECIPES)
def test_every_harness_command_in_the_recipe_parses_and_the_gate_posts_github_markdown(
    name: str, schema: str
) -> None:
    cmds = _harness_commands(name)
    assert [c[0] for c in cmds] == ["run", "compare"]
    for words in cmds:
        build_parser().parse_args([w.replace("$run_dir", "results/x") for w in words])
    compare = cmds[1]
    assert compare[compare.index("--format") + 1] == "github"
    assert "results/baselines/policy.yaml" in compare


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_comment_renders_with_the_regression_before_any_table(tmp_path: Path) -> None:
    base = write_run(tmp_path / "r", smoke_records())
    cur_records = smoke_records("run-b")
    cur_records[2]["host_rss_peak_above_base_bytes"] += 40 * MiB  # ci/train/sdpa_attention
    cur = write_run(tmp_path / "r", cur_records, make_manifest("run-b"))
    policy = load_policy(None)
    names = list(policy.for_suite(None))
    comparison = compare_snapshots(load_snapshot(base, names), load_snapshot(cur, names), policy)
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(to_github(comparison))
    page = tmp_path / "comment.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><body>{body}</body>", encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]  # fmt: skip
    assert CHROMIUM is not None
    dom = subprocess.run([CHROMIUM, *flags], capture_output=True, text=True, timeout=120).stdout
    assert "<table>" in dom and "<details open" in dom
    first_regression = dom.index("<strong>regressed</strong>")
    assert first_regression < dom.index("<table>")
    assert "ci/train/sdpa_attention" in dom[first_regression : first_regression + 200]
