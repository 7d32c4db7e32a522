"""A run's directory: manifest, append-only results.jsonl (fsync'ed per case), per-case files.

A killed run loses no finished case: each record is one line written and flushed to disk before the
next case starts; a torn last line (killed mid-write) is ignored on load and its case re-runs on resume.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MANIFEST = "manifest.json"
RESULTS = "results.jsonl"


LOCK = ".lock"
NAME_CHARS = 60  # of the suite name in a run directory's name


def safe_name(suite_name: str) -> str:
    """The suite name as one harmless path component: letters, digits, '.', '_', '-' only, no leading
    dot, at most NAME_CHARS ('../../x', 'a/b', a NUL byte, 300 characters all become a plain name)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", suite_name).lstrip(".")[:NAME_CHARS].strip("_")
    return cleaned or "suite"


def new_run_id(suite_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{safe_name(suite_name)}-{secrets.token_hex(3)}"


class RunStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, root: Path, suite_name: str, manifest: dict[str, Any]) -> RunStore:
        run_dir = root / new_run_id(suite_name)
        try:
            run_dir.mkdir(parents=True)
        except OSError as e:
            raise HarnessError(
                f"{e.filename or run_dir}: cannot create the run directory ({e.strerror})"
            ) from None
        store = cls(run_dir)
        store.lock()
        store.write_manifest({"run_id": store.run_id, **manifest})
        return store

    @classmethod
    def open_existing(cls, path: Path, suite_sha256: str | None = None, *, lock: bool = True) -> RunStore:
        """An earlier run to resume: it must be a run of the same suite file (same sha256) and not in use
        by another runner (with lock=False, only checked: nothing is written)."""
        if not path.exists():
            raise HarnessError(f"{path}: does not exist; pass results/<run-id> of an earlier run")
        if not (path / MANIFEST).is_file():
            raise HarnessError(
                f"{path}: not a run directory (no {MANIFEST}); pass results/<run-id> of an earlier run"
            )
        store = cls(path)
        manifest = store.manifest()
        if suite_sha256 is not None and manifest.get("suite_sha256") != suite_sha256:
            was = manifest.get("suite_path") or manifest.get("suite_name") or "another suite"
            theirs = str(manifest.get("suite_sha256"))[:12]
            raise HarnessError(
                f"{path}: a run of {was} (sha256 {theirs}), not of this suite "
                f"file (sha256 {suite_sha256[:12]}); resume it with the same file, or start a new run"
            )
        if lock:
            store.lock()
            store._drop_torn_tail()  # only under the lock: another runner may be mid-write
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

    def lock(self) -> None:
        """Hold the run directory for this process (flock: released by the kernel when the process dies,
        so a lock left by a killed runner is simply taken over). A second runner is refused with the
        holder's pid."""
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise HarnessError(f"{path}: cannot create the run lock ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise HarnessError(
                f"{self.path}: in use by another harness run (pid {holder}); wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HarnessError(
                f"{path}: unreadable manifest ({type(e).__name__}); this run cannot be resumed"
            ) from None
        if not isinstance(data, dict):
            raise HarnessError(
                f"{path}: not a manifest (a JSON {type(data).__name__}); this run cannot be resumed"
            )
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        try:
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            tmp.replace(self.path / MANIFEST)
        except OSError as e:
            raise HarnessError(f"{tmp}: cannot write the run's manifest ({e.strerror})") from None

    def update_manifest(self, **fields: Any) -> None:
        self.write_manifest({**self.manifest(), **fields})

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
        path = self.path / RESULTS
        try:
            with open(path, "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full or read-only disk: say where, stop cleanly; finished cases are kept
            raise HarnessError(f"{path}: cannot append the case's record ({e.strerror})") from None

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
