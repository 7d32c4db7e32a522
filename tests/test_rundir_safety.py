"""Run directories are safe: names cannot escape --results, one runner per directory, --resume only of the
same suite, report reads only files inside the run, and paths the system refuses are one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.build import load_timelines
from harness.report.tidy import tidy
from harness.results.load import frame_of_runs, inside_run, read_run
from harness.results.store import LOCK, RunStore, safe_name
from tests.fixtures_results import make_record, smoke_records, write_run


@pytest.mark.parametrize(
    "name", ["../../../../ESCAPED", "a/b/c", "x\x00y", "n" * 300, "..", ".hidden", "/abs", "sp ace:*?", ""]
)
def test_a_suite_name_makes_one_plain_directory_inside_results(tmp_path, name):
    root = tmp_path / "results"
    store = RunStore.create(root, name, {"suite_name": name})
    try:
        assert store.path.parent == root and store.path.is_dir()
        assert len(store.path.name) < 100 and "/" not in store.path.name and "\x00" not in store.path.name
        assert store.manifest()["suite_name"] == name  # the label keeps its text
    finally:
        store.unlock()
    assert list(tmp_path.iterdir()) == [root]


def test_safe_name_keeps_ordinary_names():
    assert safe_name("smoke") == "smoke" and safe_name("my-suite_v1.2") == "my-suite_v1.2"


def test_a_second_runner_on_the_same_directory_is_refused_with_the_holders_pid(tmp_path):
    first = RunStore.create(tmp_path, "s", {"suite_sha256": "abc"})
    with pytest.raises(HarnessError) as err:
        RunStore.open_existing(first.path, "abc")
    assert f"pid {os.getpid()}" in str(err.value) and str(first.path) in str(err.value)
    first.unlock()
    second = RunStore.open_existing(first.path, "abc")  # free again
    second.unlock()


# Another runner: takes the lock as `harness run --resume` does, says so, and keeps it.
HOLD = (
    "import sys, time; from pathlib import Path; from harness.results.store import RunStore; "
    "RunStore.open_existing(Path(sys.argv[1]), 'abc'); print('held', flush=True); time.sleep(60)"
)


def test_a_lock_held_by_another_process_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    store = RunStore.create(tmp_path, "s", {"suite_sha256": "abc"})
    store.unlock()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(HarnessError) as err:
            RunStore.open_existing(store.path, "abc")
        assert f"pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # the holder died with its pid still in the lock file: the lock is simply taken over
    assert (store.path / LOCK).read_text().strip() == str(holder.pid)
    RunStore.open_existing(store.path, "abc").unlock()


def test_resume_refuses_a_run_of_another_suite(tmp_path):
    store = RunStore.create(tmp_path, "s", {"suite_sha256": "a" * 64, "suite_path": "suites/a.yaml"})
    store.unlock()
    with pytest.raises(HarnessError) as err:
        RunStore.open_existing(store.path, "b" * 64)
    assert "suites/a.yaml" in str(err.value) and "not of this suite" in str(err.value)


def test_resume_refuses_a_truncated_manifest_with_one_line(tmp_path):
    store = RunStore.create(tmp_path, "s", {"suite_sha256": "abc"})
    store.unlock()
    (store.path / "manifest.json").write_text('{"suite_sha')
    with pytest.raises(HarnessError) as err:
        RunStore.open_existing(store.path, "abc")
    assert "unreadable manifest" in str(err.value)


def test_records_that_are_not_records_do_not_crash_resume(tmp_path):
    store = RunStore.create(tmp_path, "s", {"suite_sha256": "abc"})
    store.append(make_record(case_id="c1"))
    with open(store.path / "results.jsonl", "ab") as f:
        f.write(b"{}\n[]\n\xff\xfe\n42\n")
    store.append(make_record(case_id="c2"))
    assert store.done_ids() == {"c1", "c2"}
    store.unlock()


def test_report_reads_no_timeline_outside_the_run_directory(tmp_path, capsys):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"t_s": [0.0], "host_rss_bytes": [1], "phases": []}))
    run = write_run(tmp_path / "r", smoke_records())
    lines = (run / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records[0]["timeline_file"] = "../../secret.json"
    records[1]["timeline_file"] = str(secret)  # absolute
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = read_run(run)
    assert inside_run(run, records[0]["timeline_file"]) is None
    assert inside_run(run, records[1]["timeline_file"]) is None
    assert inside_run(run, records[2]["timeline_file"]) is not None
    timelines = load_timelines([loaded], tidy(frame_of_runs([loaded])))
    keys = {case for _, case in timelines}
    assert records[0]["case_id"] not in keys and records[1]["case_id"] not in keys
    assert records[2]["case_id"] in keys
    notes = capsys.readouterr().err
    assert notes.count("is not a file inside its run directory; ignored") == 2


def cli(*args: str) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue().splitlines()


def test_an_unwritable_results_directory_is_one_line(tmp_path):
    with pytest.raises(HarnessError) as err:
        RunStore.create(Path("/proc/harness-test"), "s", {})
    assert "/proc/harness-test" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("flag", ["--junit", "--md", "--json"])
@pytest.mark.parametrize("target", ["/proc/version/out", "/dev/full"])
def test_an_unwritable_or_full_compare_output_is_one_line(tmp_path, flag, target):
    base = write_run(tmp_path / "r", smoke_records(), timelines=False)
    code, lines = cli("compare", str(base), str(base), flag, target)
    assert code == 2 and len(lines) == 1 and target in lines[0], lines


def test_an_unwritable_report_output_is_one_line(tmp_path):
    run = write_run(tmp_path / "r", smoke_records(), timelines=False)
    code, lines = cli("report", str(run), "-o", "/proc/version/report.md", "--format", "md")
    assert code == 2 and len(lines) == 1 and "/proc/version" in lines[0], lines
