"""The distill workload: the loss on exact examples, the frozen teacher, and the student trained as the
train workload trains it.

Cases come from a small suite file (ci model cut to 2 layers, batch 4 x 64 random tokens, a ci-sized
teacher), built in-process with open_session, so each test runs a few fast steps.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from harness.case import CaseSpec
from harness.errors import SuiteError
from harness.models.config import SIZES, count_params
from harness.runner.session import open_session
from harness.suite.load import load_suite
from harness.workloads.distill import DistillSession, distill_loss, soft_kl

STEPS = 3
SHAPE = {"batch_size": 4, "seq_len": 64}
TEACHER = {"teacher": "ci", "teacher_overrides": {"n_layers": 3}}


def make_cases(
    tmp_path: Path,
    workloads: dict[str, dict[str, Any]],
    techniques: dict[str, list[Any]] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, CaseSpec]:
    """Cases of a one-model suite, keyed by 'workload/techniques'."""
    techniques = techniques or {"baseline": []}
    suite = {
        "version": 1,
        "defaults": {
            "warmup_steps": 0,
            "measured_steps": STEPS,
            "data": "random",
            "quality": False,
            "breakdown": False,
            **(defaults or {}),
        },
        "models": {"student": {"size": "ci", "n_layers": 2}},
        "workloads": {name: {**SHAPE, **w} for name, w in workloads.items()},
        "techniques": techniques,
        "matrix": {"model": ["student"], "workload": list(workloads), "techniques": list(techniques)},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return {f"{c.workload_name}/{c.techniques_name}": c for c in load_suite(path).cases}


def run(case: CaseSpec) -> tuple[Any, list[float]]:
    session = open_session(case)
    return session, [session.step(i) for i in range(case.measured_steps)]


def flat(params: Any) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in params])


# ---- the loss ----------------------------------------------------------------------------------------


def test_kl_term_is_zero_when_teacher_and_student_logits_are_equal() -> None:
    z = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    assert soft_kl(z.reshape(-1, 11), z.reshape(-1, 11), 3.0).item() == 0.0
    loss, ce, kl = distill_loss(z, z.clone(), y, temperature=3.0, alpha=1.0)
    assert kl.item() == 0.0 and loss.item() == 0.0
    assert ce.item() > 0.0


def _hand(
    zs: list[list[float]], zt: list[list[float]], y: list[int], t: float, a: float
) -> tuple[float, ...]:
    """The formula written out with math: softmax, KL per position, mean over positions."""

    def softmax(z: list[float], temp: float) -> list[float]:
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for s_row, t_row, target in zip(zs, zt, y, strict=True):
        ps, pt = softmax(s_row, t), softmax(t_row, t)
        kl += sum(q * (math.log(q) - math.log(p)) for q, p in zip(pt, ps, strict=True))
        ce += -math.log(softmax(s_row, 1.0)[target])
    kl, ce = kl / len(y), ce / len(y)
    return a * t * t * kl + (1 - a) * ce, ce, kl


def test_loss_matches_a_hand_computation_and_the_soft_term_is_a_true_kl() -> None:
    zs = [[1.0, -0.5, 2.0], [0.25, 0.0, -1.0]]
    zt = [[0.5, 1.5, -0.25], [2.0, -2.0, 0.75]]
    y, temp, alpha = [2, 1], 2.5, 0.3
    loss, ce, kl = distill_loss(
        torch.tensor([zs], dtype=torch.float64),
        torch.tensor([zt], dtype=torch.float64),
        torch.tensor([y]),
        temperature=temp,
        alpha=alpha,
    )
    want_loss, want_ce, want_kl = _hand(zs, zt, y, temp, alpha)
    assert kl.item() == pytest.approx(want_kl, rel=1e-12, abs=0)
    assert ce.item() == pytest.approx(want_ce, rel=1e-12, abs=0)
    assert loss.item() == pytest.approx(want_loss, rel=1e-12, abs=0)
    # A KL is positive for different distributions: the seed's sum t log s (no minus sign) is negative.
    pt = torch.softmax(torch.tensor(zt, dtype=torch.float64) / temp, -1)
    log_ps = torch.log_softmax(torch.tensor(zs, dtype=torch.float64) / temp, -1)
    assert kl.item() > 0 > (pt * log_ps).sum(-1).mean().item()
    # KL = cross-entropy against the teacher minus the teacher's entropy.
    cross, entropy = -(pt * log_ps).sum(-1).mean(), -(pt * pt.log()).sum(-1).mean()
    assert kl.item() == pytest.approx((cross - entropy).item(), rel=1e-12, abs=0)


# ---- the student trains as train trains it ----------------------------------------------------------


def test_alpha_zero_gives_exactly_the_train_workloads_losses_and_weights(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path, {"train": {"kind": "train"}, "d0": {"kind": "distill", **TEACHER, "alpha": 0.0}}
    )
    train, train_losses = run(cases["train/baseline"])
    distill, distill_losses = run(cases["d0/baseline"])
    assert distill_losses == train_losses
    assert distill.extra_metrics()["student_ce_loss"] == train_losses
    assert torch.equal(flat(distill.model.parameters()), flat(train.model.parameters()))


def test_student_starts_as_the_train_case_and_the_teacher_then_changes_its_path(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path, {"train": {"kind": "train"}, "d": {"kind": "distill", **TEACHER, "alpha": 0.5}}
    )
    _, train_losses = run(cases["train/baseline"])
    distill, distill_losses = run(cases["d/baseline"])
    m = distill.extra_metrics()
    # Same seed: same initial student and same first batch, so before any update the CE is identical.
    assert m["student_ce_loss"][0] == train_losses[0]
    # After an update on a different loss the students differ.
    assert m["student_ce_loss"][1] != train_losses[1]
    assert len(m["student_ce_loss"]) == len(m["soft_kl_loss"]) == STEPS
    for loss, ce, kl in zip(distill_losses, m["student_ce_loss"], m["soft_kl_loss"], strict=True):
        assert loss == pytest.approx(0.5 * 2.0**2 * kl + 0.5 * ce, rel=1e-6)


def _true_kl(session: DistillSession) -> float:
    """KL(teacher || student) on the first batch, written out independently of the workload's code."""
    x = session.batches[0][0]
    with torch.no_grad():
        log_t = torch.log_softmax(session.teacher(x).double(), -1)
        log_s = torch.log_softmax(session.model(x).double(), -1)
    return float((log_t.exp() * (log_t - log_s)).sum(-1).mean())


def test_pure_distillation_moves_the_student_toward_the_teacher(tmp_path: Path) -> None:
    # alpha = 1: only the KL is minimised; with the seed's sign error it would grow instead.
    cases = make_cases(
        tmp_path,
        {"d": {"kind": "distill", **TEACHER, "alpha": 1.0, "temperature": 1.0}},
        defaults={"measured_steps": 4},
    )
    session = open_session(cases["d/baseline"])
    assert isinstance(session, DistillSession)
    before = _true_kl(session)
    for i in range(4):
        session.step(i)
    assert _true_kl(session) < 0.5 * before
    kl = session.extra_metrics()["soft_kl_loss"]
    assert kl[0] == pytest.approx(before, rel=1e-5)  # the logged term is that KL (T = 1, same batch)
    assert all(b < a for a, b in itertools.pairwise(kl)), kl


def test_teacher_is_frozen_seeded_apart_and_never_changes_while_the_student_does(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path, {"d": {"kind": "distill", "teacher": "ci", "teacher_overrides": {"n_layers": 2}}}
    )
    session = open_session(cases["d/baseline"])
    assert isinstance(session, DistillSession)
    teacher, student = session.teacher, session.model
    t0, s0 = flat(teacher.parameters()), flat(student.parameters())
    # Same config as the student, but seed + 1: not the student's initial weights.
    assert t0.numel() == s0.numel() and not torch.equal(t0, s0)
    for i in range(STEPS):
        session.step(i)
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert torch.equal(flat(teacher.parameters()), t0)
    assert not torch.equal(flat(student.parameters()), s0)
    optimized = {id(p) for g in session.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in student.parameters()}
    assert optimized.isdisjoint(id(p) for p in teacher.parameters())


def test_teacher_figures_and_bf16_teacher_halves_its_bytes(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path,
        {
            "fp32": {"kind": "distill", **TEACHER},
            "bf16": {"kind": "distill", **TEACHER, "teacher_dtype": "bfloat16"},
        },
    )
    figures = {}
    for name in ("fp32", "bf16"):
        session, losses = run(cases[f"{name}/baseline"])
        assert all(math.isfinite(v) for v in losses)
        figures[name] = session.extra_metrics()
    params = count_params(SIZES["ci"].replace(n_layers=3))
    b, s, v = SHAPE["batch_size"], SHAPE["seq_len"], SIZES["ci"].vocab_size
    assert figures["fp32"]["teacher_param_count"] == figures["bf16"]["teacher_param_count"] == params
    assert figures["fp32"]["teacher_param_bytes"] == 4 * params
    assert figures["bf16"]["teacher_param_bytes"] == 2 * params
    assert figures["fp32"]["teacher_logits_bytes"] == b * s * v * 4
    assert figures["bf16"]["teacher_logits_bytes"] == b * s * v * 2
    # The forward's transient peak holds the logits and more (a layer's activations on the way).
    for f in figures.values():
        assert f["teacher_forward_peak_bytes"] > f["teacher_logits_bytes"]
    assert figures["bf16"]["teacher_forward_peak_bytes"] < figures["fp32"]["teacher_forward_peak_bytes"]


def test_teacher_runs_outside_the_students_autocast(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path,
        {"d": {"kind": "distill", **TEACHER}},
        techniques={"autocast": [{"autocast": {"dtype": "bfloat16"}}]},
    )
    session = open_session(cases["d/autocast"])
    assert isinstance(session, DistillSession)
    x = session.batches[0][0]
    with session.plan.context():
        assert session.model(x).dtype == torch.bfloat16  # the student's technique applies to it
        assert session.teacher_logits(x).dtype == torch.float32  # not to the teacher
    assert math.isfinite(session.step(0))


# ---- techniques compose on the student --------------------------------------------------------------


def test_checkpointing_and_accumulation_keep_distill_losses(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path,
        {"d": {"kind": "distill", **TEACHER}},
        techniques={
            "baseline": [],
            "ckpt": ["activation_checkpointing"],
            "accum": [{"gradient_accumulation": {"micro_batches": 2}}],
        },
    )
    base, base_losses = run(cases["d/baseline"])
    base_m = base.extra_metrics()
    for name in ("ckpt", "accum"):
        session, losses = run(cases[f"d/{name}"])
        m = session.extra_metrics()
        torch.testing.assert_close(losses, base_losses, rtol=1e-5, atol=0)
        torch.testing.assert_close(m["student_ce_loss"], base_m["student_ce_loss"], rtol=1e-5, atol=0)
        if name == "ckpt":  # recomputation replays the same ops: the updates are the same
            assert torch.equal(flat(session.model.parameters()), flat(base.model.parameters()))
        # (Accumulation sums the gradient in another order; AdamW normalises near-zero gradient
        # entries, so its weights may differ by ~lr in a few entries: the losses are the check.)
    # Accumulation feeds the teacher one micro-batch at a time: half the logits held at once.
    assert m["teacher_logits_bytes"] == base_m["teacher_logits_bytes"] // 2


# ---- refusals ----------------------------------------------------------------------------------------


def test_mismatched_vocab_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path, {"d": {"kind": "distill", "teacher": "ci", "teacher_overrides": {"vocab_size": 512}}}
    )
    with pytest.raises(ValueError, match=r"teacher vocab_size 512 != student vocab_size 256"):
        open_session(cases["d/baseline"])


def test_teacher_shorter_than_the_sequence_is_refused(tmp_path: Path) -> None:
    cases = make_cases(
        tmp_path, {"d": {"kind": "distill", "teacher": "ci", "teacher_overrides": {"max_seq_len": 32}}}
    )
    with pytest.raises(ValueError, match=r"seq_len 64 exceeds the teacher's max_seq_len 32"):
        open_session(cases["d/baseline"])


@pytest.mark.parametrize(
    ("workload", "problem"),
    [
        ({"teacher": "smal"}, r"workloads\.d\.teacher: .*unknown teacher size 'smal'.*did you mean 'small'"),
        (
            {"teacher": "ci", "teacher_overrides": {"n_layer": 2}},
            r"workloads\.d\.teacher_overrides: .*unknown model field 'n_layer'.*did you mean 'n_layers'",
        ),
        (
            {"teacher": "ci", "teacher_overrides": {"n_layers": "2"}},
            r"workloads\.d\.teacher_overrides: .*n_layers: input should be a valid integer",
        ),
        ({"teacher": "ci", "alpha": 1.5}, r"workloads\.d\.alpha: .*less than or equal to 1"),
        (
            {"teacher": "ci", "teacher_dtype": "float16"},
            r"workloads\.d\.teacher_dtype: 'float16' is not allowed",
        ),
    ],
)
def test_bad_teacher_options_are_refused_when_the_suite_loads(
    tmp_path: Path, workload: dict[str, Any], problem: str
) -> None:
    with pytest.raises(SuiteError, match=problem):
        make_cases(tmp_path, {"d": {"kind": "distill", **workload}})


# ---- a trained teacher --------------------------------------------------------------------------------


def test_reference_teacher_loads_the_cached_corpus_trained_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.corpus import load_corpus, reference_model

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "corpus.txt"
    text.write_bytes(bytes(range(256)) * 400)  # 100 KiB: a tenth held out, the rest to train on
    cases = make_cases(
        tmp_path,
        {"d": {"kind": "distill", **TEACHER, "teacher_weights": "reference"}},
        defaults={"data": "corpus", "corpus_text_file": str(text), "reference_steps": 2},
    )
    case = cases["d/baseline"]
    # The parent prepares the teacher and the student's start weights (every workload fine-tunes the
    # trained reference): the case process then only loads them from the cache.
    from harness.runner.preflight import prepare_reference

    prepare_reference(case)
    assert len(list((tmp_path / "cache" / "reference").iterdir())) == 2
    session = open_session(case)
    assert isinstance(session, DistillSession)
    assert len(list((tmp_path / "cache" / "reference").iterdir())) == 2
    want = reference_model(SIZES["ci"].replace(n_layers=3), load_corpus(text_file=text), 2, seed=1)
    got = session.teacher.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # Trained: not the seed + 1 initialisation the random teacher gets.
    torch.manual_seed(1)
    from harness.models.transformer import Transformer

    init = Transformer(SIZES["ci"].replace(n_layers=3)).state_dict()
    assert not torch.equal(got["lm_head.weight"], init["lm_head.weight"])
    assert math.isfinite(session.step(0))


def test_a_teacher_with_another_vocab_is_unsupported_before_a_process(write_suite):
    """Decided in the parent from the configs (it ran and failed as error): the KL needs one vocabulary."""
    from harness.runner.preflight import unsupported_reason
    from harness.suite.load import load_suite
    from harness.techniques.base import Environment

    suite = load_suite(
        write_suite(
            """\
            version: 1
            models:
              v300: {size: ci, vocab_size: 300}
              ci: {size: ci}
            workloads: {d: {kind: distill, teacher: ci, batch_size: 2, seq_len: 16}}
            techniques: {b: []}
            matrix: {model: [v300, ci], workload: [d], techniques: [b]}
            """
        )
    )
    reasons = {c.model_name: unsupported_reason(c, Environment(cuda_available=False)) for c in suite.cases}
    assert reasons["ci"] is None
    assert reasons["v300"] is not None and reasons["v300"].startswith(
        "distill: teacher vocab_size 256 != student vocab_size 300"
    )
