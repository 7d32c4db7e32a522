"""A run's directory: manifest, append-only results.jsonl (fsync'ed per case), per-case files.

A killed run loses no finished case: each record is one line written and flushed to disk before the
next case starts; a torn last line (killed mid-write) is ignored on load and its case re-runs on resume.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MANIFEST = "manifest.json"
RESULTS = "results.jsonl"


def new_run_id(suite_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{suite_name}-{secrets.token_hex(3)}"


class RunStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name

    @classmethod
    def create(cls, root: Path, suite_name: str, manifest: dict[str, Any]) -> RunStore:
        run_dir = root / new_run_id(suite_name)
        run_dir.mkdir(parents=True)
        store = cls(run_dir)
        store.write_manifest({"run_id": store.run_id, **manifest})
        return store

    @classmethod
    def open_existing(cls, path: Path) -> RunStore:
        if not (path / MANIFEST).is_file():
            raise HarnessError(
                f"{path}: not a run directory (no {MANIFEST}); pass results/<run-id> of an earlier run"
            )
        store = cls(path)
        store._drop_torn_tail()
        return store

    def _drop_torn_tail(self) -> None:
        """Cut a last line left unfinished by a kill, so the next append starts on a line of its own."""
        path = self.path / RESULTS
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / MANIFEST).read_text())
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        tmp.replace(self.path / MANIFEST)

    def update_manifest(self, **fields: Any) -> None:
        self.write_manifest({**self.manifest(), **fields})

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
        with open(self.path / RESULTS, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.path / RESULTS)

    def done_ids(self) -> set[str]:
        return {r["case_id"] for r in self.records()}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The readable records of a results.jsonl; lines that are not a record are left out (see
    read_records_checked for what they were)."""
    return read_records_checked(path)[0]


def read_records_checked(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, problems): every line that is not a JSON object with a case_id is a problem, named by its
    line number and byte offset. A torn last line (killed mid-write) is one too: its case did not finish."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as e:
        return [], [f"{path}: cannot read ({e.strerror})"]
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        problem = _record_problem(raw)
        if isinstance(problem, dict):
            out.append(problem)
        else:
            torn = (
                " (torn last line: the run was killed mid-write)"
                if not data.endswith(b"\n") and (offset > len(data))
                else ""
            )
            problems.append(f"{path.name} line {number} (byte {start}): {problem}{torn}")
    return out, problems


def _record_problem(raw: bytes) -> dict[str, Any] | str:
    """The record on one line, or what is wrong with the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 (byte {e.start} of the line)"
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        return f"not JSON ({e.msg if isinstance(e, json.JSONDecodeError) else 'nested too deep'})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not a record"
    if not isinstance(value.get("case_id"), str) or not value["case_id"]:
        return "a record without a case_id"
    return value
