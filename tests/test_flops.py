"""Analytic FLOPs against torch's FlopCounterMode, the GPU peak table, and the CPU calibration cache."""

from __future__ import annotations

import json

import pytest
from torch.utils.flop_counter import FlopCounterMode

from harness.analysis import calibrate
from harness.analysis.flops import flops_per_step, gpu_peak, mfu, mfu_for_device
from harness.runner.session import open_session
from tests.test_breakdown import make_case


def counted(case) -> int:
    session = open_session(case)
    with FlopCounterMode(display=False) as counter:
        session.step(0)
    return int(counter.get_total_flops())


def test_matmul_flops_equal_flopcountermode_exactly_and_6n_is_within_2_percent():
    case = make_case(batch_size=2, seq_len=64)
    f = flops_per_step(case)
    assert f["matmul_flops_per_step"] == counted(case)
    # FlopCounterMode counts matrix products only: 6N also counts biases and LayerNorm parameters.
    assert f["matmul_flops_per_step"] < f["model_flops_per_step"] < 1.02 * f["matmul_flops_per_step"]


def test_inference_counts_one_forward():
    case = make_case("infer", batch_size=2, seq_len=64)
    f = flops_per_step(case)
    assert f["matmul_flops_per_step"] == counted(case)
    assert (
        3 * f["model_flops_per_step"]
        == flops_per_step(make_case(batch_size=2, seq_len=64))["model_flops_per_step"]
    )


@pytest.mark.parametrize(
    "options",
    [{"every_k_blocks": 2}, {"scope": "mlp"}, {"scope": "attention"}, {"policy": "selective"}],
    ids=["every-2", "mlp", "attention", "selective"],
)
def test_checkpointing_adds_exactly_the_recomputed_forward(options):
    base = make_case(batch_size=2, seq_len=64)
    ckpt = make_case(batch_size=2, seq_len=64, techniques=[("activation_checkpointing", options)])
    fb, fc = flops_per_step(base), flops_per_step(ckpt)
    assert fc["model_flops_per_step"] == fb["model_flops_per_step"]
    assert counted(ckpt) - counted(base) == fc["hardware_flops_per_step"] - fc["model_flops_per_step"]


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", (989e12, "H100")),
        ("NVIDIA H100 PCIe", "bfloat16", (756e12, "H100 PCIe")),
        ("NVIDIA H200", "float32", (67e12, "H200")),
        ("NVIDIA A100-SXM4-80GB", "float32", (19.5e12, "A100")),
        ("NVIDIA L4", "bfloat16", (121e12, "L4")),
    ],
)
def test_gpu_peak_table(name, dtype, expected):
    assert gpu_peak(name, dtype) == expected


@pytest.mark.parametrize("name", ["NVIDIA L40S", "NVIDIA A10G", "Tesla T4"])
def test_gpu_peak_unknown_or_missing_dtype_gives_a_reason(name):
    assert isinstance(gpu_peak(name, "bfloat16"), str)


def test_mfu_is_achieved_over_peak():
    case = make_case()
    flops = flops_per_step(case)["model_flops_per_step"]
    out = mfu(case, 0.5, 4 * flops, "table:H100")
    assert out["achieved_flop_per_s"] == 2 * flops
    assert out["mfu_fraction"] == 0.5
    assert out["mfu_peak_source"] == "table:H100:float32"  # the dtype whose peak was used
    json.dumps(out)
    assert "mfu_unavailable_reason" in mfu_for_device(make_case(device="cuda"), 0.5, "NVIDIA L40S")


def test_cpu_calibration_is_measured_once_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    assert calibrate.measure_matmul_flop_per_s("float32", 1, size=64, repeats=1) > 0
    calls: list[str] = []

    def fake_measure(dtype: str, threads: int) -> float:
        calls.append(dtype)
        return 1e9

    monkeypatch.setattr(calibrate, "measure_matmul_flop_per_s", fake_measure)
    assert calibrate.cpu_peak_flop_per_s("float32", 1) == 1e9
    assert calibrate.cpu_peak_flop_per_s("float32", 1) == 1e9
    assert calls == ["float32"]
    (cache,) = (tmp_path / "calibration").iterdir()
    cache.write_text("{not json")
    assert calibrate.cpu_peak_flop_per_s("float32", 1) == 1e9
    assert calls == ["float32", "float32"]
    out = mfu_for_device(make_case(), 0.25)
    assert out["mfu_peak_source"] == "calibrated:cpu:float32"
    assert out["mfu_peak_flop_per_s"] == 1e9


@pytest.mark.parametrize("peak_over_flops", [0.5, -1.0])
def test_an_mfu_outside_0_1_is_withheld_with_its_reason(peak_over_flops):
    case = make_case()
    flops = flops_per_step(case)["model_flops_per_step"]
    out = mfu(case, 1.0, peak_over_flops * flops, "calibrated:cpu")  # achieved = flops: MFU 2 or < 0
    assert "mfu_fraction" not in out
    assert "outside (0, 1]" in out["mfu_unavailable_reason"]
    assert out["achieved_flop_per_s"] == flops


def test_calibration_takes_the_fastest_matmul_path(monkeypatch):
    # bf16 on a CPU without bf16 matrix units: torch.mm was 120x slower than F.linear, and a peak timed
    # on mm alone gave MFU 5.33. The peak is the best path's.
    times = iter([2.0, 0.5])
    monkeypatch.setattr(calibrate, "_best_time", lambda product, repeats: next(times))
    assert calibrate.measure_matmul_flop_per_s("bfloat16", 1, size=8) == 2 * 8**3 / 0.5


def test_a_calibration_below_what_a_step_achieved_is_measured_again(tmp_path, monkeypatch):
    # Taken while other work loaded the machine, a cached peak can sit below a later step's FLOP/s.
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    measured = iter([1e9, 5e9])
    monkeypatch.setattr(calibrate, "measure_matmul_flop_per_s", lambda dtype, threads: next(measured))
    assert calibrate.cpu_peak_flop_per_s("float32", 1) == 1e9
    assert calibrate.cpu_peak_flop_per_s("float32", 1, at_least=5e8) == 1e9  # consistent: kept
    assert calibrate.cpu_peak_flop_per_s("float32", 1, at_least=3e9) == 5e9  # re-measured
    assert calibrate.cpu_peak_flop_per_s("float32", 1) == 5e9  # and cached
