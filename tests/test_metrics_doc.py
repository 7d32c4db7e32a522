"""docs/metrics.md is the catalog's own rendering: regenerate it with `python -m harness.metrics --doc`."""

from __future__ import annotations

from harness.metrics.doc import metrics_markdown
from tests.conftest import ROOT


def test_docs_metrics_md_is_generated_from_the_catalog() -> None:
    on_disk = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert on_disk == metrics_markdown(), "run: python -m harness.metrics --doc > docs/metrics.md"
