"""Read result runs from disk: `results/<run-id>/{manifest.json,results.jsonl}` -> records or one DataFrame.

This is the only place the report and the comparison touch the results layout (docs/results.md), so a
change of layout is one edit here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.metrics.record import flatten
from harness.results.store import MANIFEST as MANIFEST_FILE
from harness.results.store import RESULTS as RESULTS_FILE
from harness.results.store import read_records_checked

# Environment fields a comparison shows (and, for memory, gates on), each with the flattened manifest
# keys it may be found under (harness/results/provenance.py writes the first): the first present wins.
ENV_FIELDS: dict[str, tuple[str, ...]] = {
    "commit": ("git_commit", "commit"),
    "dirty": ("git_dirty", "dirty"),
    "started_at": ("started_at",),
    "harness": ("harness_version", "versions.harness"),
    "torch": ("torch_version", "versions.torch"),
    "python": ("python_version", "versions.python"),
    "cpu_model": ("cpu_model",),
    "cpu_isa": ("cpu_isa",),
    "cpu_microarch": ("cpu_microarch",),
    "torch_build": ("torch_build",),
    "cpu_count": ("cpu_count",),
    "gpu_name": ("gpu_names", "gpu_name"),
    "gpu_driver": ("gpu_driver_version", "gpu_driver"),
    "host": ("host", "host_name"),
}


@dataclass(frozen=True)
class Run:
    """One run as read from disk: where it lives, its manifest (flattened) and its records (nested)."""

    run_dir: Path
    run_id: str
    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    # What could not be read (bad lines, a manifest that does not parse): a gate treats any as missing data.
    problems: tuple[str, ...] = ()

    @property
    def env(self) -> dict[str, Any]:
        return run_env(self.manifest)


def run_env(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's environment fields under stable names (None where absent)."""
    flat = flatten(manifest)
    return {name: next((flat[k] for k in keys if k in flat), None) for name, keys in ENV_FIELDS.items()}


def run_paths(paths: Sequence[Path | str]) -> list[Path]:
    """Expand a results root (a folder of run folders) into its runs, oldest name first; keep the rest."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        children = sorted(p for p in path.glob(f"*/{RESULTS_FILE}")) if path.is_dir() else []
        if path.is_dir() and not (path / RESULTS_FILE).exists() and children:
            out.extend(c.parent for c in children)
        else:
            out.append(path)
    # The same run named twice (a folder and its results.jsonl, or a root and a run in it) is one run:
    # read twice, every case would count twice in the tables.
    unique: dict[Path, Path] = {}
    for path in out:
        unique.setdefault((path.parent if path.name == RESULTS_FILE else path).resolve(), path)
    return list(unique.values())


def results_file(path: Path) -> Path:
    """A run directory or its results.jsonl -> the results.jsonl; a usage error otherwise.
    A run directory with a manifest but no results yet (killed before its first case) is an empty run."""
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file() and not (path.parent / MANIFEST_FILE).is_file():
        raise HarnessError(
            f"{path}: no results here; give a run directory (results/<run-id>) or its {RESULTS_FILE}"
        )
    return path


def read_run(path: Path) -> Run:
    """Read one run (directory or results.jsonl); the manifest is optional (an empty one if absent).
    Lines that are not records (a torn last line, a hand edit, a bad byte) are left out and named in
    `problems`, as is a manifest that does not parse."""
    res = results_file(path)
    manifest, problems = read_manifest(res.parent / MANIFEST_FILE)
    records, bad_lines = read_records_checked(res)
    run_id = str(manifest.get("run_id") or (records[0].get("run_id") if records else None) or res.parent.name)
    return Run(res.parent, run_id, manifest, records, tuple(problems + bad_lines))


def read_manifest(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(manifest, problems): an absent manifest is empty; an unreadable one is empty and a problem."""
    if not path.is_file():
        return {}, []
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        return {}, [f"{path.name}: unreadable ({type(e).__name__}: {str(e)[:120]})"]
    if not isinstance(value, dict):
        return {}, [f"{path.name}: a JSON {type(value).__name__}, not a manifest"]
    return value, []


def inside_run(run_dir: Path, rel: object) -> Path | None:
    """`rel` (a path a record names, e.g. timeline_file) as a regular file inside run_dir, else None:
    a hand-edited record must not make a report read files from elsewhere."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    root = run_dir.resolve()
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def run_frame(run: Run) -> pd.DataFrame:
    """One row per record, flattened, with the run's id, start time, commit and directory added."""
    env = run.env
    rows = []
    for record in run.records:
        row = flatten(record)
        row.setdefault("run_id", run.run_id)
        row["run_started_at"] = env["started_at"]
        row["run_commit"] = env["commit"]
        row["run_dir"] = str(run.run_dir)
        rows.append(row)
    return pd.DataFrame(rows)


def load_results(paths: Path | str | Sequence[Path | str]) -> pd.DataFrame:
    """Runs (directories or results.jsonl files) -> one DataFrame, one row per case and run."""
    return frame_of_runs(read_run(Path(p)) for p in _as_list(paths))


def frame_of_runs(runs: Iterable[Run]) -> pd.DataFrame:
    frames = [run_frame(run) for run in runs]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


def _as_list(paths: Path | str | Sequence[Path | str]) -> list[Path | str]:
    if isinstance(paths, (str, Path)):
        return [paths]
    return list(paths)
