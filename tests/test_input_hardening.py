"""Inputs that used to hang, crash or corrupt a run are refused with one line (or every mistake, one line
each), quickly; the values a case will use are range-checked at validation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import SuiteError
from harness.models.config import SIZES, ConfigValueError
from harness.suite.load import MAX_CASES, load_suite
from tests.conftest import ROOT, run_cli

BASELINE = "results/baselines/smoke-cpu.json"

GOOD = """\
version: 1
defaults: {warmup_steps: 1, measured_steps: 1}
models:
  tiny: {size: ci}
workloads:
  train: {kind: train, batch_size: 2, seq_len: 16}
  infer: {kind: infer, batch_size: 2, seq_len: 16}
techniques:
  base: []
matrix:
  model: [tiny]
  workload: [train, infer]
  techniques: [base]
"""


def validate(*paths: Path) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", *map(str, paths)])
    return code, err.getvalue().splitlines()


def test_validate_lists_every_mistake_one_line_each(tmp_path):
    text = (
        GOOD.replace("tiny: {size: ci}", "tiny: {size: ci, n_heads: 0, dropout: 5.0}")
        .replace("kind: infer,", "kind: infr,")
        .replace("base: []", "base: []\n  bad: [nope]")
        .replace("workload: [train, infer]", "workload: [train, infer]\n  batch_size: [0]")
        .replace("measured_steps: 1}", "measured_steps: 1, seed: -1}")
    )
    path = tmp_path / "five.yaml"
    path.write_text(text)
    code, lines = validate(path)
    assert code == 2
    keys = sorted(line.split(": ")[3] for line in lines)
    assert keys == ["defaults.seed", "matrix.batch_size[0]", "models.tiny.dropout", "models.tiny.n_heads",
                    "techniques.bad[0]", "workloads.infer.kind"], lines  # fmt: skip
    assert all(line.startswith(f"harness: error: {path}: ") for line in lines)
    assert not any(".str" in line or "MatrixEntry" in line or "modelentry" in line for line in lines)


def test_validate_checks_every_file_given(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("size: ci", "size: cii"))
    code, lines = validate(bad, good)
    assert code == 2 and len(lines) == 1 and "did you mean 'ci'" in lines[0]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"n_layers": -3}, "n_layers"),
        ({"n_heads": 0}, "n_heads"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"dropout": 5.0}, "dropout"),
        ({"n_heads": 3}, "n_heads"),
        ({"layer_norm_eps": float("inf")}, "layer_norm_eps"),
    ],
)
def test_a_model_config_out_of_range_cannot_be_built(change, key):
    with pytest.raises(ConfigValueError) as err:
        SIZES["ci"].replace(**change)
    assert err.value.field == key


def test_the_byte_corpus_needs_a_vocabulary_of_256(write_suite):
    path = write_suite(GOOD.replace("tiny: {size: ci}", "tiny: {size: ci, vocab_size: 100}"))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert err.value.key_path == "models.tiny.vocab_size" and "256" in err.value.problem
    random_data = GOOD.replace("tiny: {size: ci}", "tiny: {size: ci, vocab_size: 100}").replace(
        "measured_steps: 1}", "measured_steps: 1, data: random}"
    )
    assert len(load_suite(write_suite(random_data, "random.yaml")).cases) == 2


def test_an_axis_value_is_never_silently_replaced(write_suite):
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(GOOD.replace("techniques: [base]", "techniques: [base]\n  batch_size: [0]")))
    assert err.value.key_path == "matrix.batch_size[0]"
    cases = load_suite(
        write_suite(GOOD.replace("techniques: [base]", "techniques: [base]\n  batch_size: [3]"))
    )
    assert {c.batch_size for c in cases.cases} == {3}


def test_a_matrix_of_a_million_points_is_refused_by_its_count_before_expanding(write_suite):
    many = ", ".join(str(i) for i in range(1, 1001))
    seqs = ", ".join(str(i) for i in range(2, 502))
    text = GOOD.replace(
        "techniques: [base]", f"techniques: [base]\n  batch_size: [{many}]\n  seq_len: [{seqs}]"
    )
    t0 = time.perf_counter()
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(text))
    seconds = time.perf_counter() - t0
    assert f"expands to {2 * 1000 * 500} cases, more than the cap of {MAX_CASES}" in err.value.problem
    assert seconds < 5  # generous: it takes milliseconds; expanding a million cases took over 15 minutes


def test_a_billion_laughs_is_refused_without_rendering_it(write_suite):
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    path = write_suite("version: 1\n" + laughs + "name: *i\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert "expands to more than" in str(err.value) and len(str(err.value)) < 300


def test_a_duplicate_key_names_both_lines(write_suite):
    path = write_suite(GOOD + "matrix:\n  model: [tiny]\n  workload: [train]\n  techniques: [base]\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert "duplicate key 'matrix' (first at line 10)" in str(err.value) and "line 14" in str(err.value)


def test_yaml_merge_keys_are_not_duplicates(write_suite):
    text = GOOD.replace(
        "workloads:\n  train: {kind: train, batch_size: 2, seq_len: 16}",
        "workloads:\n  train: &t {kind: train, batch_size: 2, seq_len: 16}\n  long: {<<: *t, seq_len: 32}",
    )
    assert len(load_suite(write_suite(text)).cases) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_at_once_not_read(tmp_path):
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    code, lines = validate(fifo)
    assert code == 2 and "not a regular file" in lines[0]


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_devices_and_directories_are_refused(path):
    if not Path(path).exists():
        pytest.skip(f"{path} not on this platform")
    code, lines = validate(Path(path))
    assert code == 2 and len(lines) == 1
    assert "not a regular file" in lines[0] or "a directory" in lines[0]


def test_a_huge_file_is_refused_by_its_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "#" * (2 << 20))
    code, lines = validate(path)
    assert code == 2 and "more than the 1048576" in lines[0]


def test_cli_refuses_a_fifo_and_deep_nesting_without_hanging_or_traceback(tmp_path):
    """The real CLI in a subprocess: the FIFO has no writer, so reading it would block forever."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nname: " + "[" * 5000 + "]" * 5000 + "\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(fifo), str(deep)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "not a regular file" in lines[0] and "nested deeper than 64" in lines[1]


def test_a_missing_corpus_file_is_refused_at_validation(write_suite, tmp_path):
    text = GOOD.replace(
        "measured_steps: 1}", f"measured_steps: 1, corpus_text_file: {tmp_path / 'nope.txt'}}}"
    )
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(text))
    assert err.value.key_path == "defaults.corpus_text_file"


def test_every_mistake_in_one_techniques_options_gets_its_line(tmp_path):
    """Two mistakes in one technique's options (a value out of range, an unknown key) are two lines:
    the first must not hide the second."""
    text = GOOD.replace("base: []", "base: []\n  lo: [{lora: {rank: 0, bogus: 1}}]").replace(
        "techniques: [base]", "techniques: [base, lo]"
    )
    path = tmp_path / "two.yaml"
    path.write_text(text)
    code, lines = validate(path)
    assert code == 2
    keys = sorted(line.split(": ")[3] for line in lines)
    assert keys == ["techniques.lo[0].lora.bogus", "techniques.lo[0].lora.rank"], lines


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["run", "suites/smoke.yaml", "--report", "/proc/r.html"],
            "--report /proc/r.html: cannot write in /proc",
        ),
        (["report", "results/baselines", "-o", "/proc/x/y.html"], "-o /proc/x/y.html: cannot write in /proc"),
        (["compare", BASELINE, BASELINE, "--md", "/proc/x.md"], "--md /proc/x.md: cannot write in /proc"),
        (["compare", BASELINE, BASELINE, "--junit", "tests"], "--junit tests: is a folder"),
        (
            ["fit", "suites/fit.yaml", "--budget", "1GiB", "--md", "/proc/f.md"],
            "--md /proc/f.md: cannot write",
        ),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(args, says):
    """Not after a whole run: checked first, one line, exit 2, nothing run."""
    proc = run_cli(*args, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "results:" not in proc.stdout  # no case ran


@pytest.mark.parametrize(
    ("section", "name", "says"),
    [
        ("models", "m/x", "models.'m/x': a name cannot be or hold '/' (case names join names with '/')"),
        ("techniques", "b\x1b[31mRED", "techniques.'b\\x1b[31mRED': a name cannot be or hold '\\x1b'"),
        ("workloads", "  ", "workloads.'  ': a name cannot be or hold nothing but spaces"),
    ],
)
def test_entry_names_that_would_read_as_others_or_reach_the_terminal_are_refused(
    tmp_path, capsys, section, name, says
):
    names = {"models": "m", "workloads": "w", "techniques": "b"} | {section: name}
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "version: 1\n"
        f"models: {{{json.dumps(names['models'])}: {{size: ci}}}}\n"
        f"workloads: {{{json.dumps(names['workloads'])}: {{kind: train, batch_size: 1, seq_len: 8}}}}\n"
        f"techniques: {{{json.dumps(names['techniques'])}: []}}\n"
        f"matrix: {{model: [{json.dumps(names['models'])}], workload: [{json.dumps(names['workloads'])}], "
        f"techniques: [{json.dumps(names['techniques'])}]}}\n"
    )
    assert main(["validate", str(suite)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "\x1b" not in err, err
