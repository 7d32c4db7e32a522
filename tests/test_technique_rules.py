"""Techniques own their rules: prediction and FLOP adjustments are methods of the technique, relations are
traits, and the composition order is one table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from harness import techniques as techreg
from harness.analysis import predict as pr
from harness.analysis.flops import flops_per_step
from harness.analysis.shape import Shape, StepFlops
from harness.runner.extras import prediction
from harness.techniques.base import Phase, Technique, TechniqueConfig
from harness.techniques.order import ORDER, rank
from tests.test_breakdown import make_case

EXTRA_FLOPS = 1_000_000


@pytest.fixture
def test_only_technique() -> Iterator[str]:
    """A technique that exists only in this test: defining the class is the only edit."""

    class SplitBatch(Technique):
        """Test-only: predicts one micro-batch's activations and adds a fixed recomputation."""

        name: ClassVar[str] = "test_split_batch"
        phase: ClassVar[Phase] = Phase.STEP

        class Config(TechniqueConfig):
            k: int = 2
            """Micro-batches."""

        config: Config

        def adjust_prediction(self, shape: Shape) -> str | None:
            shape.batch //= self.config.k
            return None

        def adjust_flops(self, flops: StepFlops, shape: Shape) -> str | None:
            flops.recomputed += EXTRA_FLOPS
            return None

    try:
        yield SplitBatch.name
    finally:
        del Technique.registry[SplitBatch.name]


def test_a_technique_defined_in_the_tests_reaches_predict_flops_and_the_record(test_only_technique):
    case = make_case(techniques=[(test_only_technique, {"k": 2})])
    assert pr.predict(case) == pr.predict(make_case(batch_size=4))
    f, base = flops_per_step(case), flops_per_step(make_case())
    assert f["hardware_flops_per_step"] - f["model_flops_per_step"] == EXTRA_FLOPS
    assert f["model_flops_per_step"] == base["model_flops_per_step"]
    measured = {"tensor_peak_bytes": pr.predict(case)["tensor_peak_bytes"]}
    record = prediction(case, measured)
    assert record["predicted"] == pr.predict(case)
    assert record["tensor_peak_measured_over_predicted"] == 1.0


def test_a_technique_without_a_rule_says_so_by_name():
    out = pr.predict(make_case(techniques=[("fsdp2", {})]))
    assert set(out) == {"prediction_unavailable_reason"}
    assert out["prediction_unavailable_reason"].startswith("fsdp2: no prediction rule")


def test_the_order_table_names_registered_techniques_grouped_by_phase():
    phases = [techreg.get(name).phase for name in ORDER]
    assert phases == sorted(phases), "order.py's table must list CONFIG, STRUCTURE, ... in phase order"
    assert len(set(ORDER)) == len(ORDER)
    assert rank("not_listed") == len(ORDER)


def test_composition_follows_the_table_within_a_phase():
    names = ["weight_only_quantization", "lora", "structured_pruning", "autocast", "activation_checkpointing"]
    composed = [t.name for t in techreg.compose((n, None) for n in names)]
    expected = [
        "structured_pruning",
        "lora",
        "weight_only_quantization",
        "activation_checkpointing",
        "autocast",
    ]
    assert composed == expected


def test_setting_order_on_a_technique_points_at_the_table():
    with pytest.raises(TypeError, match=r"order\.py"):

        class Ordered(Technique):
            order: ClassVar[int] = 3


def test_relations_are_traits_not_name_lists():
    quantizers = {n for n in techreg.names() if techreg.get(n).quantizes}
    assert quantizers == {"fake_quantization", "dynamic_int8", "weight_only_quantization"}
    adapters = {n for n in techreg.names() if techreg.get(n).freezes_base}
    assert adapters == {"lora", "bottleneck_adapter", "shared_adapter"}
    a, b = techreg.instantiate("fake_quantization", None), techreg.instantiate("dynamic_int8", None)
    assert "two weight quantizers" in str(techreg.conflict([a, b]))
    fsdp2 = techreg.get("fsdp2")
    assert "adafactor" in fsdp2.conflicts and "adamw" not in fsdp2.conflicts and "sgd" not in fsdp2.conflicts


def _recomputed(**options: Any) -> int:
    f = flops_per_step(
        make_case(batch_size=2, seq_len=64, techniques=[("activation_checkpointing", options)])
    )
    return int(f["hardware_flops_per_step"] - f["model_flops_per_step"])


def test_checkpointing_flops_follow_policy_and_scope():
    full, every2 = _recomputed(), _recomputed(every_k_blocks=2)
    mlp, attention = _recomputed(scope="mlp"), _recomputed(scope="attention")
    assert _recomputed(policy="selective") == 0  # every matmul output is kept
    # full re-runs attention and the MLP's first matmul, and the output projection between them.
    assert mlp > 0 and attention > 0 and mlp + attention < full
    assert every2 * 2 == full  # 4 blocks: 2 checkpointed


@pytest.mark.parametrize(("measured_over_predicted", "shown"), [(0.19, False), (1.0, True), (5.1, False)])
def test_a_measured_over_predicted_ratio_outside_0_2_to_5_is_withheld(measured_over_predicted, shown):
    case = make_case()
    peak = pr.predict(case)["tensor_peak_bytes"]
    record = prediction(case, {"tensor_peak_bytes": int(measured_over_predicted * peak)})
    assert ("predicted" in record) == shown
    if not shown:
        assert set(record) == {"prediction_unavailable_reason"}
        assert "outside (0.2, 5.0)" in record["prediction_unavailable_reason"]


def test_the_baseline_optimizer_is_torchs_default_and_the_record_says_so():
    from harness.runner.session import open_session
    from harness.techniques._optimizer import chosen_implementation
    from harness.workloads.train import TrainSession

    base = open_session(make_case(batch_size=2, seq_len=16))
    assert isinstance(base, TrainSession)
    assert base.optimizer.defaults["foreach"] is None and not base.optimizer.defaults["fused"]
    assert base.extra_metrics() == {
        "optimizer_implementation": "for_loop",
        "optimizer_implementation_reason": "torch's default for cpu parameters (foreach, fused unset)",
    }
    assert chosen_implementation(base.optimizer, "cuda")["optimizer_implementation"] == "foreach"
    picked = open_session(
        make_case(batch_size=2, seq_len=16, techniques=[("adamw", {"implementation": "foreach"})])
    )
    assert isinstance(picked, TrainSession)
    assert picked.optimizer.defaults["foreach"] is True
    assert picked.extra_metrics()["optimizer_implementation_reason"] == "chosen in the suite"


def test_a_foreach_optimizer_is_not_predicted_with_the_for_loop_model():
    out = pr.predict(make_case(techniques=[("adamw", {"implementation": "foreach"})]))
    assert "for-loop" in out["prediction_unavailable_reason"]
    assert "predicted" not in out and "tensor_peak_bytes" in pr.predict(make_case(techniques=[("adamw", {})]))


def test_workload_fit_is_decided_by_the_workloads_trait():
    checkpointing = techreg.instantiate("activation_checkpointing", None)
    assert checkpointing.workload_reason("distill", trains=True) is None
    assert "does not train" in str(checkpointing.workload_reason("infer", trains=False))
    # A new workload that does not train (say, generation) is covered with no edit to the technique.
    assert techreg.instantiate("dynamic_int8", None).workload_reason("generate", trains=False) is None
    assert "train" in str(techreg.instantiate("zero1", None).workload_reason("distill", trains=True))


def test_gqa_kv_heads_that_do_not_divide_the_model_s_heads_are_unsupported_before_a_process(write_suite):
    """kv_heads 3 on a 4-head model: said from the config, with the divisor to choose, not a shape error
    at run time; a divisor runs (no reason)."""
    from harness.runner.preflight import unsupported_reason
    from harness.suite.load import load_suite
    from harness.techniques.base import Environment

    suite = load_suite(
        write_suite(
            """\
            version: 1
            models:
              ci: {size: ci}
              qwen: {hf: qwen2.5-0.5b, num_hidden_layers: 1, hidden_size: 64, intermediate_size: 128,
                     num_attention_heads: 4, num_key_value_heads: 4, vocab_size: 256}
            workloads: {w: {kind: infer, batch_size: 1, seq_len: 16}}
            techniques:
              gqa3: [{grouped_query_attention: {kv_heads: 3}}]
              gqa2: [{grouped_query_attention: {kv_heads: 2}}]
            matrix: {model: [ci, qwen], workload: [w], techniques: [gqa3, gqa2]}
            """
        )
    )
    env = Environment(cuda_available=False)
    reasons = {c.name: unsupported_reason(c, env) for c in suite.cases}
    heads = {"ci": 4, "qwen": 4}
    for model, n in heads.items():
        assert reasons[f"{model}/w/gqa3"] == (
            f"grouped_query_attention: kv_heads 3 does not divide the model's {n} K/V heads; "
            f"choose a divisor of {n}"
        )
        assert reasons[f"{model}/w/gqa2"] is None


def test_a_one_token_window_on_a_transformers_model_is_unsupported(write_suite):
    """transformers' DynamicSlidingWindowLayer keeps keys[-window + 1:]: at window 1 every token. The
    built-in cache keeps one; a window of 2 is the same on both."""
    from harness.runner.preflight import unsupported_reason
    from harness.suite.load import load_suite
    from harness.techniques.base import Environment

    suite = load_suite(
        write_suite(
            """\
            version: 1
            models:
              ci: {size: ci}
              qwen: {hf: qwen2.5-0.5b, num_hidden_layers: 1, hidden_size: 64, intermediate_size: 128,
                     num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 256}
            workloads: {g: {kind: generate, batch_size: 1, prompt_len: 8, new_tokens: 4}}
            techniques:
              w1: [{sliding_window_cache: {window: 1}}]
              w2: [{sliding_window_cache: {window: 2}}]
            matrix: {model: [ci, qwen], workload: [g], techniques: [w1, w2]}
            """
        )
    )
    reasons = {c.name: unsupported_reason(c, Environment(cuda_available=False)) for c in suite.cases}
    assert reasons == {
        "ci/g/w1": None,
        "ci/g/w2": None,
        "qwen/g/w1": "sliding_window_cache: window 1 on a transformers model: its sliding-window cache then "
        "keeps every token; use 2+",
        "qwen/g/w2": None,
    }


def test_a_quantized_cache_beside_a_static_or_windowed_one_on_hf_is_unsupported(write_suite):
    """Refused at expansion with the reason (it ran and failed as `error`); the built-in model has all
    three forms and runs the combination."""
    from harness.runner.preflight import unsupported_reason
    from harness.suite.load import load_suite
    from harness.techniques.base import Environment

    suite = load_suite(
        write_suite(
            """\
            version: 1
            models:
              ci: {size: ci}
              qwen: {hf: qwen2.5-0.5b, num_hidden_layers: 1, hidden_size: 64, intermediate_size: 128,
                     num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 256}
            workloads: {g: {kind: generate, batch_size: 1, prompt_len: 8, new_tokens: 4}}
            techniques:
              kvall: [{kv_cache_quantization: {bits: 4, group_size: 4}}, static_cache,
                      {sliding_window_cache: {window: 8}}]
              kv8: [{kv_cache_quantization: {bits: 8}}]
            matrix: {model: [ci, qwen], workload: [g], techniques: [kvall, kv8]}
            """
        )
    )
    reasons = {c.name: unsupported_reason(c, Environment(cuda_available=False)) for c in suite.cases}
    assert reasons["qwen/g/kvall"] == (
        "kv_cache_quantization: on a transformers model the quantized cache is dynamic and unwindowed; "
        "drop sliding_window_cache, static_cache"
    )
    assert reasons["ci/g/kvall"] is None and reasons["qwen/g/kv8"] is None and reasons["ci/g/kv8"] is None
