"""plotly.js written once per report folder; shared by the run report and the fit view (its own module so
neither report module imports the other)."""

from __future__ import annotations

from pathlib import Path

import plotly


def write_plotly_bundle(folder: Path) -> str:
    """plotly.js once per folder, shared by every report in it (4.6 MB that each page would otherwise
    carry); returns its name relative to the pages."""
    name = f"plotly-{plotly.__version__}.min.js"
    path = folder / name
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        tmp.replace(path)
    return name
