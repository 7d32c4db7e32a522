"""User-facing errors: each carries its exit code and prints as one line (cause, constraint, fix)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # run: a case failed; compare: a regression
EXIT_USAGE = 2  # bad input: suite, flags, paths
EXIT_INSUFFICIENT = 3  # compare: not enough data to judge


class HarnessError(Exception):
    """A mistake of the user's, not a bug: printed as one line, no traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SuiteError(HarnessError):
    """A suite file that cannot be accepted: names the file and the key path."""

    def __init__(self, path: str, key_path: str, problem: str) -> None:
        where = f"{path}: {key_path}" if key_path else path
        super().__init__(f"{where}: {problem}")
        self.path, self.key_path, self.problem = path, key_path, problem


class SuiteErrors(SuiteError):
    """Every mistake found in one suite file, one line each; path/key_path/problem are the first's."""

    def __init__(self, errors: list[SuiteError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.key_path, first.problem)
        self.args = ("\n".join(str(e) for e in errors),)
        self.errors = errors


def closest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean X?' for the nearest choice, or '' when nothing is near."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def allowed(choices: Iterable[str]) -> str:
    return ", ".join(sorted(choices))


def write_text_file(path: Path, text: str) -> None:
    """Write an output file the user named; any OS failure (read-only, full, a folder) is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise HarnessError(f"{path}: cannot write ({e.strerror or e}); choose a writable path") from None


def check_writable(path: Path, option: str, folder_ok: bool = False) -> None:
    """Before any work: an output the user named can be written (its folder, or the nearest one that
    exists, takes a file), so a long run does not end in "cannot write". One line, exit 2, otherwise."""
    import tempfile

    if path.is_dir() and not folder_ok:
        raise HarnessError(f"{option} {path}: is a folder; give a file name")
    folder = path if path.is_dir() or (folder_ok and not path.suffix) else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".harness-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise HarnessError(
            f"{option} {path}: cannot write in {folder} ({e.strerror or e}); choose a writable path"
        ) from None
