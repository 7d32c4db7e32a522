"""The pytest plugin as a team would use it: in a throw-away project of its own, through real pytest runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.pytest_plugin import HarnessRecord, limit_failures, parse_bytes

ROOT = Path(__file__).resolve().parents[1]
TINY = {"size": "ci", "n_layers": 1}
USER_MODEL = {"factory": "mymodel:build", "kwargs": {"width": 32}}  # the throw-away project's own module
FACTORY = """
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class Model(nn.Module):
    def __init__(self, width, depth, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.lm_head = nn.Linear(width, vocab)

    def forward(self, ids):  # token ids (B, T) -> logits (B, T, V)
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return self.lm_head(x)


def build(width=32, depth=2, vocab=256):
    return Model(width, depth, vocab)
"""
TRAIN = {"kind": "train", "batch_size": 2, "seq_len": 32}
FAST = {"warmup_steps": 1, "measured_steps": 3, "quality": False, "timeout_s": 300}


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1200)


def _project(tmp_path: Path) -> Path:
    """A user's project: its own pyproject.toml, a model factory module and a test file using the fixture."""
    proj = tmp_path / "userproj"
    (proj / "tests").mkdir(parents=True)
    (proj / "pyproject.toml").write_text('[project]\nname = "userproj"\nversion = "0"\n')
    (proj / "mymodel.py").write_text(FACTORY)
    (proj / "tests" / "test_memory.py").write_text(
        textwrap.dedent(
            f"""
            import pytest

            MODEL, WORKLOAD, FAST = {USER_MODEL!r}, {TRAIN!r}, {FAST!r}

            @pytest.mark.harness_limit(tensor_peak="2GiB")
            def test_step_memory(harness_case):
                rec = harness_case(model=MODEL, workload=WORKLOAD,
                                   techniques=["activation_checkpointing"], defaults=FAST)
                assert rec.status == "ok"
                assert 0 < rec.tensor_peak_bytes < 2 * 2**30
                assert rec.case_id and len(rec.step_time_s) == 3

            @pytest.mark.harness_limit(tensor_peak="1KiB")
            def test_limit_below_the_figure(harness_case):
                harness_case(model=MODEL, workload=WORKLOAD, defaults=FAST)
            """
        )
    )
    return proj


@pytest.mark.slow
def test_fixture_in_a_users_project_passes_fails_on_limit_and_feeds_pytest_benchmark(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    out = tmp_path / "bench.json"
    run = _pytest(proj, "tests", "--benchmark-json", str(out))
    assert "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    assert "tensor_peak = " in run.stdout and "exceeds the limit 1KiB" in run.stdout
    data = json.loads(out.read_text())
    # Both tests measured; a broken limit fails the test but the figures are still real ones.
    bench = {b["name"]: b for b in data["benchmarks"]}["test_step_memory"]
    assert bench["stats"]["rounds"] == 3  # harness's three measured steps, not re-timed
    assert bench["extra_info"]["tensor_peak_bytes"] > 0
    assert bench["extra_info"]["techniques"] == ["activation_checkpointing"]
    cmp = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(out), "--columns", "min,median,rounds"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cmp.returncode == 0, cmp.stderr
    assert "test_step_memory" in cmp.stdout


def test_harness_suite_collects_one_item_per_case_named_after_it() -> None:
    run = _pytest(ROOT, "--harness-suite", "suites/smoke.yaml", "--collect-only")
    assert "10 tests collected" in run.stdout, run.stdout + run.stderr
    assert "ci/train/baseline" in run.stdout and "ci-deep/train-long/sdpa_attention" in run.stdout


def test_harness_suite_that_does_not_validate_is_one_collection_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodels: {m: {size: nope}}\n")
    run = _pytest(tmp_path, "--harness-suite", str(bad))
    assert run.returncode != 0
    assert "bad.yaml" in run.stdout and "Traceback" not in run.stdout


@pytest.mark.slow
def test_harness_suite_maps_statuses_to_pass_and_skip(tmp_path: Path) -> None:
    suite = tmp_path / "two.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: two
            defaults: {json.dumps(FAST)}
            models: {{tiny: {json.dumps(TINY)}}}
            workloads: {{train: {json.dumps(TRAIN)}}}
            techniques: {{baseline: [], fp16: [{{autocast: {{dtype: float16}}}}]}}
            matrix: {{model: [tiny], workload: [train], techniques: [baseline, fp16]}}
            """
        )
    )
    run = _pytest(tmp_path, "--harness-suite", str(suite), "-rs")
    assert "1 passed, 1 skipped" in run.stdout, run.stdout + run.stderr
    assert "unsupported: autocast" in run.stdout


def _rec(**over: object) -> HarnessRecord:
    raw = {"case_id": "x", "case_name": "m/w/t", "status": "ok", "step_time_s_median": 0.2,
           "step_time_s": [0.2], "breakdown": {"tensor_peak_bytes": 3 * 2**20}}  # fmt: skip
    raw.update(over)
    return HarnessRecord.from_record(raw)


def test_limits_fail_above_and_fail_closed_when_unmeasured() -> None:
    assert limit_failures(_rec(), {"tensor_peak": "4MiB"}) == []
    (above,) = limit_failures(_rec(), {"tensor_peak": "2MiB"})
    assert "tensor_peak = 3.0 MiB exceeds the limit 2MiB" in above
    (unmeasured,) = limit_failures(_rec(breakdown=None), {"tensor_peak": "4MiB"})
    assert "could not be measured" in unmeasured
    (no_base,) = limit_failures(_rec(), {"step_time_ratio": 1.3})  # no baseline ran: not a pass
    assert "step_time_ratio could not be measured" in no_base


def test_step_time_ratio_reads_the_baseline() -> None:
    rec = HarnessRecord.from_record(
        {"case_name": "a", "status": "ok", "step_time_s_median": 0.3},
        baseline=_rec(step_time_s_median=0.2),
    )
    assert rec.step_time_ratio == pytest.approx(1.5)
    assert limit_failures(rec, {"step_time_ratio": 1.3}) != []


@pytest.mark.parametrize(
    ("text", "expected"), [("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20), ("1.5GB", 1_500_000_000), (7, 7)]
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["2 parsecs", "-1", "GiB", ""])
def test_parse_bytes_refuses_with_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="2GiB, 512MiB"):
        parse_bytes(bad)
