"""Training-side techniques: checkpointing variants, pure bf16, fp8, optimizers, chunked loss,
gradient accumulation, activation offloading.

Cases are built in-process from a small suite file (the ci model cut to 2 layers, batch 4 x 64 tokens),
so each test runs a few fast steps. Memory effects are measured as tensor bytes: a dispatch mode
follows every storage created under it and keeps the live total and its peak.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.case import CaseSpec
from harness.errors import SuiteError
from harness.models.config import SIZES
from harness.models.transformer import Transformer, next_token_loss
from harness.runner.session import context_for, open_session, techniques_for
from harness.suite.load import load_suite
from harness.techniques import get
from harness.techniques.base import Context, Environment, LossFn, StepPlan
from harness.techniques.chunked_cross_entropy import chunked_loss, hidden_and_head
from harness.workloads.train import plain_loss

CPU = Environment(cuda_available=False)
MiB = 2**20


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created under this mode that are still alive (`live`), and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # In-place ops and views return an input's storage: not a new allocation, even when that input
        # existed before the mode (parameters, optimizer state) and so is not counted.
        inputs = {_ptr(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and _ptr(t) not in inputs:
                self._track(t.untyped_storage())
        return out

    def _track(self, st: torch.UntypedStorage) -> None:
        key = st.data_ptr()
        if st.nbytes() == 0 or key in self.sizes:
            return  # already counted
        self.sizes[key] = st.nbytes()
        self.live += st.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)


def _ptr(t: torch.Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


def make_cases(
    tmp_path: Path,
    techniques: dict[str, Any],
    model: dict[str, Any] | None = None,
    steps: int = 3,
    dtype: str = "float32",
    batch_size: int = 4,
    seq_len: int = 64,
) -> dict[str, CaseSpec]:
    """Cases of a one-model, one-workload suite, keyed by technique-combination name."""
    suite = {
        "version": 1,
        "defaults": {"warmup_steps": 0, "measured_steps": steps, "dtype": dtype},
        "models": {"m": {"size": "ci", "n_layers": 2, **(model or {})}},
        "workloads": {"train": {"kind": "train", "batch_size": batch_size, "seq_len": seq_len}},
        "techniques": techniques,
        "matrix": {"model": ["m"], "workload": ["train"], "techniques": list(techniques)},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return {c.techniques_name: c for c in load_suite(path).cases}


def run(case: CaseSpec, steps: int | None = None) -> tuple[Any, list[float]]:
    session = open_session(case)
    losses = [session.step(i) for i in range(steps or case.measured_steps)]
    return session, losses


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


def saved_after_forward(case: CaseSpec) -> int:
    """Bytes that one forward + loss leaves alive for backward (the saved activations and the loss)."""
    session: Any = open_session(case)
    x, y = session.batches[0]
    with LiveBytes() as mode:
        loss = session.plan.loss_fn(session.model, x, y)
        saved = mode.live
    loss.backward()
    return int(saved)


def reason(case: CaseSpec, name: str, env: Environment = CPU) -> str | None:
    tech = next(t for t in techniques_for(case) if t.name == name)
    return tech.unsupported_reason(env, context_for(case))


# ---- activation checkpointing -------------------------------------------------------------------

CKPT = {
    "baseline": [],
    "full": ["activation_checkpointing"],
    "selective": [{"activation_checkpointing": {"policy": "selective"}}],
    "mlp": [{"activation_checkpointing": {"scope": "mlp"}}],
    "attention": [{"activation_checkpointing": {"scope": "attention"}}],
    "every2_selective_mlp": [
        {"activation_checkpointing": {"every_k_blocks": 2, "policy": "selective", "scope": "mlp"}}
    ],
}


def test_checkpointing_variants_keep_losses_and_weights_exact(tmp_path: Path) -> None:
    # Two steps: the second loss and the final weights both depend on the first step's gradients.
    cases = make_cases(tmp_path, CKPT, steps=2)
    base_session, base_losses = run(cases["baseline"])
    for name in CKPT:
        session, losses = run(cases[name])
        assert losses == pytest.approx(base_losses, rel=1e-5), name
        torch.testing.assert_close(
            flat_params(session.model), flat_params(base_session.model), rtol=1e-5, atol=1e-7
        )


def test_checkpointing_variants_order_saved_activation_bytes(tmp_path: Path) -> None:
    # GELU: the MLP keeps both the fc1 output and the GELU output, which selective drops to one.
    cases = make_cases(tmp_path, CKPT, model={"activation": "gelu"})
    saved = {name: saved_after_forward(case) for name, case in cases.items()}
    base = saved["baseline"]
    assert saved["full"] < 0.5 * base
    for partial in ("selective", "mlp", "attention"):
        assert saved["full"] < saved[partial] < base, (partial, saved)
    # Every-2nd-block, MLP-only selective touches one MLP of two: the smallest saving.
    assert saved["selective"] < saved["every2_selective_mlp"] < base


def test_selective_policy_saves_matmul_outputs_only() -> None:
    from torch.utils.checkpoint import CheckpointPolicy

    from harness.techniques._checkpoint_wrap import save_matmuls_policy

    aten = torch.ops.aten
    assert save_matmuls_policy(None, aten.addmm.default) == CheckpointPolicy.MUST_SAVE
    assert save_matmuls_policy(None, aten.bmm.default) == CheckpointPolicy.MUST_SAVE
    assert save_matmuls_policy(None, aten.gelu.default) == CheckpointPolicy.PREFER_RECOMPUTE
    assert save_matmuls_policy(None, aten.native_layer_norm.default) == CheckpointPolicy.PREFER_RECOMPUTE


# ---- pure bf16 ----------------------------------------------------------------------------------


def test_pure_bf16_halves_parameter_bytes_and_keeps_state_in_bf16(tmp_path: Path) -> None:
    cases = make_cases(tmp_path, {"baseline": [], "bf16": ["pure_bf16"]}, steps=2)
    base, base_losses = run(cases["baseline"])
    bf16, losses = run(cases["bf16"])
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    states = [s for s in bf16.optimizer.state.values()]
    assert {s["exp_avg"].dtype for s in states} == {s["exp_avg_sq"].dtype for s in states} == {torch.bfloat16}
    param_bytes = [sum(p.nbytes for p in s.model.parameters()) for s in (base, bf16)]
    assert param_bytes[1] * 2 == param_bytes[0]
    # The same computation rounded to 8 mantissa bits: close to fp32, not equal.
    assert losses == pytest.approx(base_losses, rel=1e-2)
    assert losses != base_losses


def test_pure_bf16_is_unsupported_when_weights_are_already_bf16(tmp_path: Path) -> None:
    case = make_cases(tmp_path, {"bf16": ["pure_bf16"]}, dtype="bfloat16")["bf16"]
    assert "already bfloat16" in (reason(case, "pure_bf16") or "")


def test_pure_bf16_with_autocast_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(
        SuiteError,
        match=r"(pure_bf16 conflicts with autocast|autocast conflicts with pure_bf16): autocast mixes",
    ):
        make_cases(tmp_path, {"both": ["pure_bf16", "autocast"]})


# ---- fp8 training -------------------------------------------------------------------------------


def test_fp8_training_says_why_it_cannot_run_without_an_fp8_gpu(tmp_path: Path) -> None:
    case = make_cases(tmp_path, {"fp8": ["fp8_training"]})["fp8"]
    assert reason(case, "fp8_training") == (
        "needs a CUDA GPU with compute capability >= 8.9 (H100/L4/...); this machine has none"
    )
    a100 = Environment(cuda_available=True, cuda_device_name="A100", cuda_capability=(8, 0))
    assert "A100 has 8.0" in (reason(case, "fp8_training", a100) or "")
    h100 = Environment(cuda_available=True, cuda_device_name="H100", cuda_capability=(9, 0))
    assert "this case runs on cpu" in (reason(case, "fp8_training", h100) or "")


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9), reason="needs an fp8 GPU"
)
def test_fp8_training_swaps_linears_and_trains(tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "defaults": {"device": "cuda", "dtype": "bfloat16", "warmup_steps": 0, "measured_steps": 3},
                "models": {"m": {"size": "ci"}},
                "workloads": {"train": {"kind": "train", "batch_size": 8, "seq_len": 128}},
                "techniques": {"fp8": ["fp8_training"]},
                "matrix": {"model": ["m"], "workload": ["train"], "techniques": ["fp8"]},
            }
        )
    )
    session, losses = run(load_suite(path).cases[0])
    kinds = {type(m).__name__ for m in session.model.modules()}
    assert "Float8Linear" in kinds
    assert type(session.model.lm_head).__name__ == "Linear"  # the head stays high precision by default
    assert all(torch.isfinite(torch.tensor(losses)))


# ---- optimizers ---------------------------------------------------------------------------------

OPTIMIZERS = {
    "baseline": [],
    "adamw": ["adamw"],
    "sgd": [{"sgd": {"lr": 0.05}}],
    "momentum": [{"sgd": {"momentum": 0.9}}],
    "adafactor": ["adafactor"],
    "adamw_8bit": ["adamw_8bit"],
}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.nbytes for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))


def test_optimizer_state_bytes_after_one_step(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    cases = make_cases(tmp_path, OPTIMIZERS, steps=1)
    runs = {name: run(case) for name, case in cases.items()}
    sessions = {name: session for name, (session, _) in runs.items()}
    # Named explicitly, AdamW is the baseline's optimizer: the same update, bit for bit.
    assert torch.equal(flat_params(sessions["adamw"].model), flat_params(sessions["baseline"].model))
    n = sum(p.numel() for p in sessions["baseline"].model.parameters())
    adamw = sessions["adamw"].optimizer
    moments = sum(s[k].nbytes for s in adamw.state.values() for k in ("exp_avg", "exp_avg_sq"))
    assert moments == 8 * n
    assert state_bytes(sessions["sgd"].optimizer) == 0
    assert sessions["sgd"].optimizer.param_groups[0]["lr"] == 0.05
    assert state_bytes(sessions["momentum"].optimizer) == 4 * n
    assert state_bytes(sessions["adafactor"].optimizer) < 0.10 * state_bytes(adamw)
    eight_bit = sessions["adamw_8bit"].optimizer
    # Matrices get 8-bit moments; tensors under bitsandbytes' 4096-element threshold stay fp32.
    moment_dtypes = {p.numel() >= 4096: s["state1"].dtype for p, s in eight_bit.state.items()}
    assert moment_dtypes == {True: torch.uint8, False: torch.float32}
    assert 0.25 * state_bytes(adamw) < state_bytes(eight_bit) < 0.35 * state_bytes(adamw)


def test_two_optimizers_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="one optimizer"):
        make_cases(tmp_path, {"two": ["sgd", "adafactor"]})
    sgd_conflicts = set(get("sgd").conflicts)
    assert {"adamw", "adafactor", "adamw_8bit", "adamw_4bit"} <= sgd_conflicts
    assert "sgd" not in sgd_conflicts and "autocast" not in sgd_conflicts


def test_torchao_low_bit_optimizers_are_unsupported_on_cpu(tmp_path: Path) -> None:
    cases = make_cases(tmp_path, {"ao8": [{"adamw_8bit": {"backend": "torchao"}}], "ao4": ["adamw_4bit"]})
    assert "compiles its step" in (reason(cases["ao8"], "adamw_8bit") or "")
    assert "compiles its step" in (reason(cases["ao4"], "adamw_4bit") or "")


# ---- chunked cross-entropy ----------------------------------------------------------------------


def _head_model(vocab: int) -> Transformer:
    torch.manual_seed(0)
    return Transformer(SIZES["ci"].replace(n_layers=1, vocab_size=vocab))


def test_chunked_loss_and_gradients_equal_the_plain_ones() -> None:
    x, y = torch.randint(0, 512, (2, 2, 48)).unbind(0)
    plain, chunked = _head_model(512), _head_model(512)
    loss = next_token_loss(plain(x), y)
    loss.backward()
    # 96 tokens in 5 chunks: uneven chunks must still give the mean over all tokens.
    c_loss = chunked_loss(chunked, x, y, chunks=5)
    c_loss.backward()
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=0)
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_chunked_loss_keeps_fewer_bytes_than_the_plain_loss() -> None:
    x, y = torch.randint(0, 4096, (2, 4, 64)).unbind(0)
    saved, peaks = {}, {}
    loss_fns: dict[str, LossFn] = {"plain": plain_loss, "chunked": functools.partial(chunked_loss, chunks=8)}
    for name, loss_fn in loss_fns.items():
        model = _head_model(4096)
        with LiveBytes() as mode:
            loss = loss_fn(model, x, y)
            saved[name] = mode.live
            loss.backward()
        peaks[name] = mode.peak
    logits_bytes = 4 * 64 * 4096 * 4  # one (B*T, V) fp32 tensor
    # The plain loss keeps the (B*T, V) log-probabilities for backward; the chunked one keeps only views
    # of the hidden states, so forward leaves exactly one logits-sized tensor less behind.
    assert saved["plain"] - saved["chunked"] == pytest.approx(logits_bytes, rel=1e-3)
    # In backward the plain loss adds two more (B*T, V) gradient buffers; chunks hold 1/8 of those.
    assert peaks["plain"] - peaks["chunked"] > logits_bytes


def test_chunked_loss_finds_the_transformer_inside_a_wrapper() -> None:
    model = _head_model(256)
    hidden, head = hidden_and_head(torch.nn.Sequential(model))
    assert head is model.lm_head and hidden == model.hidden
    with pytest.raises(Exception, match="has no `hidden\\(ids\\)` method"):
        hidden_and_head(torch.nn.Linear(2, 2))


def test_chunked_cross_entropy_case_matches_the_baseline(tmp_path: Path) -> None:
    cce = {"chunked_cross_entropy": {"chunks": 3}}
    cases = make_cases(tmp_path, {"baseline": [], "cce": [cce]}, steps=2)
    assert run(cases["cce"])[1] == pytest.approx(run(cases["baseline"])[1], rel=1e-5)


# ---- gradient accumulation ----------------------------------------------------------------------


def test_gradient_accumulation_is_exact_over_five_steps(tmp_path: Path) -> None:
    # Plain SGD at a small rate, not AdamW, for the weights: summing micro-batch gradients rounds
    # differently, and AdamW's first steps (update ~ lr * g / |g|) turn the rounding of gradients that
    # nearly cancel into lr-sized differences (2e-3 relative after one step here); a large rate lets a
    # ReLU input near zero flip sign and diverge. Plain SGD moves weights by lr * g: equal gradients
    # show as equal weights (7e-9 apart after five steps).
    sgd = {"sgd": {"lr": 0.01}}
    techniques = {"sgd": [sgd], "ga": [sgd, {"gradient_accumulation": {"micro_batches": 4}}]}
    cases = make_cases(tmp_path, techniques, steps=5)
    base, base_losses = run(cases["sgd"])
    ga, losses = run(cases["ga"])
    assert ga.plan.micro_batches == 4
    assert losses == pytest.approx(base_losses, rel=1e-5)
    assert not torch.allclose(flat_params(base.model), flat_params(open_session(cases["sgd"]).model))  # moved
    torch.testing.assert_close(flat_params(ga.model), flat_params(base.model), rtol=1e-5, atol=1e-7)


def test_gradient_accumulation_lowers_the_step_peak(tmp_path: Path) -> None:
    techniques = {"baseline": [], "ga": [{"gradient_accumulation": {"micro_batches": 4}}]}
    # Long enough that activations, not gradients and optimizer temporaries, set the baseline's peak.
    cases = make_cases(tmp_path, techniques, steps=2, batch_size=8, seq_len=128)
    peaks = {}
    for name, case in cases.items():
        session: Any = open_session(case)
        session.step(0)  # optimizer state exists before the measured step
        with LiveBytes() as mode:
            session.step(1)
        peaks[name] = mode.peak
    assert peaks["ga"] < 0.5 * peaks["baseline"]


def test_gradient_accumulation_needs_a_divisible_batch(tmp_path: Path) -> None:
    case = make_cases(tmp_path, {"ga": [{"gradient_accumulation": {"micro_batches": 3}}]})["ga"]
    assert reason(case, "gradient_accumulation") == "batch size 4 is not divisible into 3 equal micro-batches"


# ---- activation offloading ----------------------------------------------------------------------


def test_activation_offloading_is_unsupported_on_cpu_and_adds_one_step_context(tmp_path: Path) -> None:
    case = make_cases(tmp_path, {"off": ["activation_offloading"]})["off"]
    assert (
        reason(case, "activation_offloading")
        == "moves nothing on CPU: activations already live in host memory"
    )
    plan = StepPlan(loss_fn=plain_loss)
    get("activation_offloading")().plan_step(plan, Context("cuda", "float32", "train", 4, 64, 0))
    assert len(plan.contexts) == 1
    assert isinstance(plan.contexts[0](), torch.autograd.graph.save_on_cpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_activation_offloading_is_exact_and_lowers_device_peak(tmp_path: Path) -> None:
    peaks, losses = {}, {}
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "defaults": {"device": "cuda", "warmup_steps": 1, "measured_steps": 2},
                "models": {"m": {"size": "ci"}},
                "workloads": {"train": {"kind": "train", "batch_size": 8, "seq_len": 256}},
                "techniques": {"baseline": [], "off": ["activation_offloading"]},
                "matrix": {"model": ["m"], "workload": ["train"], "techniques": ["baseline", "off"]},
            }
        )
    )
    for case in load_suite(path).cases:
        session = open_session(case)
        session.step(0)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        losses[case.techniques_name] = [session.step(i) for i in (1, 2)]
        torch.cuda.synchronize()
        peaks[case.techniques_name] = torch.cuda.max_memory_allocated()
    assert losses["off"] == losses["baseline"]
    assert peaks["off"] < 0.8 * peaks["baseline"]
