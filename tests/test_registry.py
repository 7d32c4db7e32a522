"""Every registered technique, with no test code of its own: documented, configurable, and it runs on the
tiny model (ok with finite losses, or unsupported with a stated reason)."""

from __future__ import annotations

import math
import textwrap

import pytest

from harness import techniques as techreg
from harness import workloads as wlreg
from harness.runner.preflight import detect_environment, unsupported_reason
from harness.runner.session import context_for, open_session, techniques_for
from harness.suite.load import load_suite

NAMES = techreg.names()
SUITE = """\
version: 1
defaults: {{warmup_steps: 0, measured_steps: 2, data: random, reference_steps: 0}}
models:
  tiny: {{size: ci, n_layers: 2, d_model: 64, n_heads: 2, d_ff: 128, vocab_size: 256}}
workloads:
  w: {{kind: {kind}, batch_size: 4, seq_len: 32}}
techniques:
  t: [{name}]
matrix: {{model: [tiny], workload: [w], techniques: [t]}}
"""


def kinds_for(cls: type[techreg.Technique]) -> list[str]:
    # train and infer need no options of their own; distill (a teacher) is exercised in its own tests.
    tech = cls(cls.Config())
    return [k for k in ("train", "infer") if not tech.workload_reason(k, wlreg.get(k).trains)]


def test_the_registry_finds_the_spine_techniques():
    assert {"baseline", "activation_checkpointing", "autocast", "sdpa_attention"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_documented_with_phase_and_documented_options(name):
    cls = techreg.get(name)
    assert cls.__doc__ and len(cls.__doc__.strip()) > 40, "say what it saves and what it costs"
    assert isinstance(cls.phase, techreg.Phase)
    for field, info in cls.Config.model_fields.items():
        assert info.description, f"{name}.{field} has no docstring"


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips(name):
    cls = techreg.get(name)
    cfg = cls.Config()
    assert cls.Config.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    "name,kind", [(n, k) for n in NAMES for k in kinds_for(techreg.get(n))], ids=lambda v: str(v)
)
def test_runs_on_the_tiny_model_or_says_why_not(name, kind, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE.format(kind=kind, name=name)))
    (case,) = load_suite(path).cases
    reason = unsupported_reason(case, detect_environment())
    if reason is not None:
        assert len(reason) > 15, reason  # a stated reason, not a shrug
        return
    if any(t.launch_ranks(context_for(case)) > 1 for t in techniques_for(case)):
        pytest.skip("multi-rank: runs through torchrun in the case process (tests/test_multirank.py)")
    session = open_session(case)
    losses = [session.step(i) for i in range(2)]
    assert all(math.isfinite(x) for x in losses), losses
