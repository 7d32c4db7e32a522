"""The tensor breakdown of one instrumented step: exact persistent categories, and agreement with the
profiler's memory records."""

from __future__ import annotations

from typing import Any

import pytest
from torch.profiler import ProfilerActivity, profile

from harness.analysis.breakdown import CATEGORIES, breakdown_step
from harness.analysis.predict import param_tensors
from harness.case import CaseSpec, TechniqueSpec
from harness.models.config import SIZES, count_params
from harness.runner.session import open_session

CI = SIZES["ci"]


def make_case(
    kind: str = "train", techniques: list[tuple[str, dict[str, Any]]] | None = None, **over: Any
) -> CaseSpec:
    model = {**CI.to_dict(), **over.pop("model", {})}
    fields: dict[str, Any] = dict(
        suite="t", model_name="ci", model=model, workload_name=kind, workload={"kind": kind},
        techniques_name="x", techniques=[TechniqueSpec(name=n, config=c) for n, c in techniques or []],
        batch_size=8, seq_len=128, device="cpu", dtype="float32", seed=0, warmup_steps=1, measured_steps=1,
        threads=1, host_malloc_mmap_threshold_bytes=None, repeats=1, timeout_s=60.0, memory_limit_bytes=None,
        sample_interval_ms=5.0, timing_pass=False, data="random", corpus_text_file=None, reference_steps=0,
        quality=False, heldout_batches=1, breakdown=False,
    )  # fmt: skip
    return CaseSpec(**{**fields, **over})


def test_baseline_train_persistent_categories_are_exact_and_sum_to_the_peak():
    session = open_session(make_case())
    b = breakdown_step(session, module_depth=2)
    p = count_params(CI)
    assert b["parameters_bytes"] == 4 * p
    # AdamW: exp_avg + exp_avg_sq (8 bytes per fp32 parameter) and a 4-byte fp32 `step` per tensor.
    n_tensors = len(list(session.model.parameters()))
    assert n_tensors == len(param_tensors(CI)) == 69
    assert b["optimizer_state_bytes"] == 8 * p + 4 * n_tensors
    assert b["buffers_bytes"] == 0
    assert sum(b[f"{c}_bytes"] for c in CATEGORIES.values()) == b["tensor_peak_bytes"]
    assert b["activations_bytes"] > b["parameters_bytes"]  # b8 x s128 explicit attention: activations lead
    # Per module: the root's peak is the step's; a submodule's lies below it.
    assert b["module_peak_bytes.Transformer"] == b["tensor_peak_bytes"]
    assert 0 < b["module_peak_bytes.Transformer.lm_head"] < b["tensor_peak_bytes"]


def _profiled_peak_above_entry(session: Any, i: int) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        session.step(i)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for e in events:  # replay allocations (+) and frees (-): the peak above the state at entry
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def test_breakdown_agrees_with_the_profilers_memory_records():
    session = open_session(make_case())
    session.step(0)  # optimizer state exists before both measurements
    b = breakdown_step(session, i=1)
    peak = _profiled_peak_above_entry(session, 1)
    above_entry = b["tensor_peak_bytes"] - b["parameters_bytes"] - b["optimizer_state_bytes"]
    # MemTracker also counts the batch's int64 inputs and targets (allocated before the profiler
    # started, 2 x 8 x 128 x 8 = 16 KiB each); the profiler sees only allocations inside it.
    batch_bytes = 2 * 8 * 128 * 8
    assert abs(above_entry - batch_bytes - peak) <= 0.005 * peak


def test_inference_breakdown_handles_frozen_parameters():
    session = open_session(make_case("infer"))
    b = breakdown_step(session)
    assert b["parameters_bytes"] == 4 * count_params(CI)
    assert b["gradients_bytes"] == b["optimizer_state_bytes"] == b["temporaries_bytes"] == 0
    assert b["activations_bytes"] > 0
    assert all(not p.requires_grad for p in session.model.parameters())


REPEATED_CALLS = {
    # The model's forward runs once per micro-batch; the LM head once per chunk, outside the forward.
    "gradient_accumulation": [("gradient_accumulation", {"micro_batches": 2})],
    "chunked_cross_entropy": [("chunked_cross_entropy", {"chunks": 4})],
}


@pytest.mark.parametrize("tech", REPEATED_CALLS)
def test_steps_that_call_a_module_repeatedly_get_a_breakdown(tech):
    session = open_session(make_case(techniques=REPEATED_CALLS[tech]))
    session.step(0)
    b = breakdown_step(session, i=1, module_depth=1)
    p = count_params(CI)
    assert b["parameters_bytes"] == 4 * p
    assert b["optimizer_state_bytes"] == 8 * p + 4 * len(param_tensors(CI))
    assert sum(b[f"{c}_bytes"] for c in CATEGORIES.values()) == b["tensor_peak_bytes"]
    assert max(v for k, v in b.items() if k.startswith("module_peak_bytes.")) == b["tensor_peak_bytes"]
    # The same step replayed from the profiler's raw allocation records (the batch: see above).
    peak = _profiled_peak_above_entry(session, 1)
    above_entry = b["tensor_peak_bytes"] - b["parameters_bytes"] - b["optimizer_state_bytes"]
    assert abs(above_entry - 2 * 8 * 128 * 8 - peak) <= 0.005 * peak
    if tech == "gradient_accumulation":
        # The second micro-batch's backward runs with the first one's gradients all present, and
        # half the batch's activations: the peak lies below the baseline's.
        assert b["gradients_bytes"] == 4 * p
        assert b["tensor_peak_bytes"] < breakdown_step(open_session(make_case()))["tensor_peak_bytes"]
