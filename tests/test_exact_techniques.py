"""Techniques meant to be exact keep the baseline's losses over 10 fp32 training steps (issue 4)."""

from __future__ import annotations

import textwrap

import pytest

from harness.runner.session import open_session
from harness.suite.load import load_suite

SUITE = """\
version: 1
defaults: {warmup_steps: 0, measured_steps: 10, data: corpus, reference_steps: 0}
models:
  m: {size: ci, n_layers: 3}
workloads:
  train: {kind: train, batch_size: 8, seq_len: 64}
techniques:
  baseline: []
  ckpt: [activation_checkpointing]
  ckpt_selective: [{activation_checkpointing: {policy: selective}}]
  accum2: [{gradient_accumulation: {micro_batches: 2}}]
  accum4: [{gradient_accumulation: {micro_batches: 4}}]
matrix: {model: [m], workload: [train], techniques: [baseline, ckpt, ckpt_selective, accum2, accum4]}
"""


@pytest.fixture(scope="module")
def losses(tmp_path_factory) -> dict[str, list[float]]:
    path = tmp_path_factory.mktemp("exact") / "s.yaml"
    path.write_text(textwrap.dedent(SUITE))
    out = {}
    for case in load_suite(path).cases:
        session = open_session(case)
        out[case.techniques_name] = [session.step(i) for i in range(10)]
    return out


@pytest.mark.parametrize("name", ["ckpt", "ckpt_selective", "accum2", "accum4"])
def test_losses_equal_the_baseline_within_1e_5_over_10_steps(losses, name):
    base = losses["baseline"]
    assert len(base) == 10 and base[-1] < base[0]  # it trains: the comparison is not of constants
    assert losses[name] == pytest.approx(base, rel=1e-5)
