"""The harness's own fixed cost per case, beside a bare `python -c "import torch"`.

Run for figures:  pytest tests/test_bench_overhead.py --benchmark-enable
(with the default --benchmark-disable each runs once, as a check that it works).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.runner import forkserver
from harness.runner.case_runner import run_case
from harness.runner.parent import run_pass
from harness.suite.load import load_suite

pytestmark = pytest.mark.slow

SUITE = """\
version: 1
defaults: {warmup_steps: 0, measured_steps: 1, timing_pass: false}
models:
  tiny: {size: ci, n_layers: 1, d_model: 32, n_heads: 2, d_ff: 64}
workloads:
  infer: {kind: infer, batch_size: 1, seq_len: 8}
techniques:
  baseline: []
matrix: {model: [tiny], workload: [infer], techniques: [baseline]}
"""


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return load_suite(path).cases[0]


def test_bare_import_torch(benchmark):
    benchmark.pedantic(
        lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True), rounds=5, warmup_rounds=1
    )


# What a case cannot do without: a Python with torch, and the model built.
IMPORT_AND_BUILD = """\
import torch
from harness.models.config import SIZES
from harness.models.transformer import Transformer
Transformer(SIZES["ci"].replace(n_layers=1, d_model=32, n_heads=2, d_ff=64))
"""


def _children_cpu_s() -> float:
    """CPU time of every process this one started: those it has reaped, and the live fork servers with
    the case processes they have reaped (not in RUSAGE_CHILDREN until a server itself is reaped)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + sum(_proc_cpu_s(s.proc.pid) for s in forkserver._servers if s.alive())


def _proc_cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def test_bare_import_torch_and_model_build(benchmark):
    cpu: list[float] = []

    def one() -> None:
        c0 = _children_cpu_s()
        subprocess.run([sys.executable, "-c", IMPORT_AND_BUILD], check=True)
        cpu.append(_children_cpu_s() - c0)

    benchmark.pedantic(one, rounds=5, warmup_rounds=1)
    benchmark.extra_info["cpu_s_median"] = sorted(cpu)[len(cpu) // 2]


def test_whole_case_fixed_cost(benchmark, tiny_case, tmp_path):
    """A trivial case as `harness run` runs it: the memory pass and one timing pass, with the record.
    Compare with test_bare_import_torch_and_model_build (the target: at most 1.5x of it); CPU time
    (extra_info) is the figure a loaded machine changes least."""
    case = tiny_case.model_copy(update={"timing_pass": True})
    cpu: list[float] = []

    def one() -> None:
        c0 = _children_cpu_s()
        record = run_case(case, tmp_path / "run", "bench", None)
        assert record["status"] == "ok" and record["timing_source"] == "timing_pass"
        cpu.append(_children_cpu_s() - c0)

    benchmark.pedantic(one, rounds=5, warmup_rounds=1)
    benchmark.extra_info["cpu_s_median"] = sorted(cpu)[len(cpu) // 2]


@pytest.mark.parametrize("start", ["fork_server", "spawn"])
def test_whole_case_fork_server_vs_spawn(benchmark, tiny_case, tmp_path, monkeypatch, start):
    """test_whole_case_fixed_cost with the case processes forked from the fork server or spawned fresh
    (HARNESS_FORK_SERVER=0): compare the two parametrizations' medians. The fork server's own start (its
    imports, once per runner) is paid by the first case only: extra_info.first_case_s shows it."""
    if start == "spawn":
        monkeypatch.setenv(forkserver.ENV_SWITCH, "0")
    forkserver.stop_all()  # the first case below starts the server afresh
    case = tiny_case.model_copy(update={"timing_pass": True})
    cpu: list[float] = []

    def one() -> float:
        c0, t0 = _children_cpu_s(), time.monotonic()
        record = run_case(case, tmp_path / "run", "bench", None)
        assert record["status"] == "ok" and record["process_start"] == start
        cpu.append(_children_cpu_s() - c0)
        return time.monotonic() - t0

    benchmark.extra_info["first_case_s"] = round(one(), 3)
    cpu.clear()
    benchmark.pedantic(one, rounds=5, warmup_rounds=0)
    benchmark.extra_info["cpu_s_median"] = sorted(cpu)[len(cpu) // 2]


def test_case_process_fixed_cost(benchmark, tiny_case, tmp_path):
    """A whole memory pass of a trivial case: spawn, imports, phase protocol, one step, result, exit."""
    parts: dict[str, list[float]] = {"spawn_to_first_measured_step_s": [], "teardown_s": []}

    def one() -> None:
        result = run_pass(tiny_case, tmp_path / "case", True, None, time.monotonic() + 120)
        assert result.status == "ok"
        measured = next(p for p in result.phases if p.name == "measured")
        parts["spawn_to_first_measured_step_s"].append(measured.t_start_s)
        parts["teardown_s"].append(result.wall_time_s - result.phases[-1].t_end_s)

    benchmark.pedantic(one, rounds=5, warmup_rounds=1)
    for name, values in parts.items():
        benchmark.extra_info[name + "_median"] = sorted(values)[len(values) // 2]
    assert benchmark.extra_info["teardown_s_median"] < 5


BREAKDOWN_SUITE = """\
version: 1
defaults: {{warmup_steps: 1, measured_steps: 5, timing_pass: false, data: random, quality: false,
            breakdown: {breakdown}}}
models:
  m: {{size: ci, n_layers: 4}}
workloads:
  train: {{kind: train, batch_size: 8, seq_len: 128}}
techniques:
  baseline: []
matrix: {{model: [m], workload: [train], techniques: [baseline]}}
"""


@pytest.mark.parametrize("breakdown", ["false", "true"])
def test_timed_steps_with_and_without_the_breakdown(benchmark, tmp_path, breakdown):
    """The instrumented breakdown step runs after the `measured` mark: the timed steps must not slow down.
    Compare extra_info.step_time_s_median of the two parametrizations."""
    path = tmp_path / "b.yaml"
    path.write_text(BREAKDOWN_SUITE.format(breakdown=breakdown))
    case = load_suite(path).cases[0]
    medians: list[float] = []

    def one() -> None:
        result = run_pass(case, tmp_path / "case", True, None, time.monotonic() + 300)
        assert result.status == "ok"
        assert ("breakdown" in result.child) == (breakdown == "true")
        steps = sorted(result.child["step_time_s"])
        medians.append(steps[len(steps) // 2])

    benchmark.pedantic(one, rounds=3, warmup_rounds=0)
    benchmark.extra_info["step_time_s_median"] = sorted(medians)[len(medians) // 2]


# #13's yardstick: a 5.4 M-parameter GPT-2-shaped model (4 x 256, tied, GELU, SDPA), train 5 + 15 and
# infer 2 + 10 steps, quality and breakdown off. Target: wall <= 2x the timed (measured) steps.
GPT2_SHAPED_SUITE = """\
version: 1
name: overhead
defaults: {warmup_steps: 5, measured_steps: 15, quality: false, breakdown: false}
models:
  g: {size: small, n_layers: 4, d_model: 256, n_heads: 4, d_ff: 1024, vocab_size: 8192, max_seq_len: 256,
      tie_embeddings: true, activation: gelu, attention: sdpa}
workloads:
  train: {kind: train, batch_size: 4, seq_len: 256}
  infer: {kind: infer, batch_size: 4, seq_len: 256}
techniques:
  baseline: []
matrix:
  - {model: [g], workload: [train], techniques: [baseline]}
  - {model: [g], workload: [infer], techniques: [baseline], defaults: {warmup_steps: 2, measured_steps: 10}}
"""


def test_run_wall_time_against_its_timed_steps(benchmark, tmp_path):
    """`harness run` of the two-case suite as a user runs it (a subprocess, its own torch import and fork
    servers): extra_info has the wall time over the measured steps' sum (measured here at 2.39 on a quiet
    2-core machine; 2.55 before the early server start and the fast exit, 3.28 before the fork server)."""
    import json

    suite = tmp_path / "overhead.yaml"
    suite.write_text(GPT2_SHAPED_SUITE)
    ratios: list[float] = []

    def one() -> None:
        out = tmp_path / f"r{len(ratios)}"
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(suite), "--results", str(out)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        wall = time.monotonic() - t0
        assert done.returncode == 0, done.stderr[-2000:]
        (run,) = out.iterdir()
        records = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in records] == ["ok", "ok"]
        timed = sum(sum(r["step_time_s"]) for r in records)
        ratios.append(wall / timed)

    benchmark.pedantic(one, rounds=1, warmup_rounds=0)
    benchmark.extra_info["wall_over_timed_steps_ratio"] = round(ratios[-1], 3)
