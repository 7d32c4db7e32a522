"""The tidy table -> CSV or Parquet, for notebooks and other tools."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.report.tidy import is_missing


def _scalar(value: Any) -> Any:
    # Lists and dicts (techniques, artefacts) become JSON text so every column is flat in CSV and Parquet.
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return None if is_missing(value) else value


def flat_table(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        out[col] = [_scalar(v) for v in out[col]]
    return out


def export_table(frame: pd.DataFrame, out: Path, fmt: str) -> Path:
    """Write the tidy table as csv or parquet; parquet needs pyarrow (a one-line error otherwise)."""
    table = flat_table(frame)
    if fmt == "csv":
        table.to_csv(out, index=False)
    elif fmt == "parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise HarnessError(
                "--format parquet needs pyarrow, which is not installed: "
                "pip install pyarrow, or use --format csv"
            )
        table.convert_dtypes().to_parquet(out, index=False)
    else:
        raise HarnessError(f"unknown export format {fmt!r}; use csv or parquet")
    return out
