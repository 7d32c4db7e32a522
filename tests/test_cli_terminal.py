"""What the terminal tells a user: --version, the names a suite can use, the ETA, the resume hint."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

import harness
from harness import techniques as techreg
from harness.catalog import first_sentence
from harness.cli import EtaColumn, main
from harness.models.config import SIZES


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"harness {harness.__version__}"


def test_sizes_lists_every_size_with_its_parameters(capsys):
    assert main(["sizes"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(SIZES)
    ci = next(line for line in lines if line.startswith("ci "))
    assert "4 layers x d_model 128" in ci and "0.9 M params" in ci


def test_techniques_lists_every_technique_once_with_its_docstring(capsys):
    assert main(["techniques"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == techreg.names()
    ckpt = next(line for line in lines if line.startswith("activation_checkpointing "))
    assert "[training workloads]" in ckpt and "(Chen et al. 2016)." in ckpt  # "et al." does not end it


def test_first_sentence_unwraps_and_stops_at_the_full_stop():
    doc = """Does a thing
    across two lines. Then more.

    Details."""
    assert first_sentence(doc) == "Does a thing across two lines."
    assert first_sentence(None) == "(no documentation)"
    assert len(first_sentence("word, " * 60 + "end.")) <= 115


def test_eta_from_the_mean_time_per_case():
    now = [0.0]
    with Progress(EtaColumn(), console=Console(file=io.StringIO()), get_time=lambda: now[0]) as bar:
        task = bar.add_task("x", total=4, completed=1, resumed=1)  # one case done in an earlier run
        assert "-:--:--" in str(EtaColumn().render(bar.tasks[0]))
        now[0] = 100.0
        bar.advance(task)  # one case in 100 s, two to go
        assert str(EtaColumn().render(bar.tasks[0])) == "ETA 0:03:20"


def test_a_reader_that_stops_early_ends_the_listing_quietly(tmp_path) -> None:
    """`harness list SUITE | head -1`: the reader closed the pipe; no error line, exit 141 as git's."""
    import subprocess
    import sys

    # 1500 cases: a listing well past the pipe's 64 KiB buffer, so the write after `head` left must fail.
    workloads = "\n".join(f"  w{n}: {{kind: infer, batch_size: {n}, seq_len: 8}}" for n in range(1, 1501))
    suite = tmp_path / "many.yaml"
    suite.write_text(
        "version: 1\nmodels:\n  m: {size: ci}\nworkloads:\n" + workloads + "\ntechniques:\n  baseline: []\n"
        "matrix:\n  - {model: [m], techniques: [baseline], workload: ["
        + ", ".join(f"w{n}" for n in range(1, 1501))
        + "]}\n"
    )
    cmd = f"'{sys.executable}' -m harness list '{suite}' | head -1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.stdout.count("\n") == 1 and "m/w1/baseline" in proc.stdout
    assert proc.stderr == "" and proc.returncode == 141, proc.stderr
