"""The project stands alone: no tracked file points readers at material outside the repository."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT

# Spelled in two pieces so that this file does not match itself.
OUTSIDE = "../" + "shared"


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    hits = []
    for name in files.stdout.split():
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        hits += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE in line]
    assert hits == [], f"files that reference {OUTSIDE} (copy the facts into docs/ instead): {hits}"


def test_the_docs_the_code_cites_exist():
    for doc in ("docs/techniques.md", "docs/measurement.md"):
        assert (ROOT / doc).is_file(), doc
