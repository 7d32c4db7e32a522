"""Hand-made result records and runs (docs/results.md, record_version 1) for report and compare tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
CATEGORIES = ("parameters", "buffers", "gradients", "optimizer_state", "activations", "temporaries", "other")


def case_id_for(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def make_record(
    model: str = "ci",
    workload: str = "train",
    techniques: tuple[str, ...] = (),
    *,
    run_id: str = "run-a",
    status: str = "ok",
    peak: int = 300 * MiB,
    step_times: list[float] | None = None,
    loss: list[float] | None = None,
    gpu_peak: int | None = None,
    batch_size: int = 8,
    seq_len: int = 128,
    case_id: str | None = None,
    definition: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One record; `definition` changes the case id without changing the name (a changed definition)."""
    name = "+".join(techniques) or "baseline"
    steps = step_times if step_times is not None else [0.10, 0.11, 0.10, 0.12]
    ok = status == "ok"
    record: dict[str, Any] = {
        "record_version": 1,
        "run_id": run_id,
        "case_id": case_id or case_id_for(model, workload, list(techniques), batch_size, seq_len, definition),
        "case_name": f"{model}/{workload}/{name}",
        "suite": "smoke",
        "model_name": model,
        "workload_name": workload,
        "workload_kind": "infer" if workload.startswith("infer") else "train",
        "techniques_name": name,
        "techniques": list(techniques),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "device": "cuda" if gpu_peak is not None else "cpu",
        "dtype": "float32",
        # What harness.case.baseline_key pairs on: everything but the techniques and run settings.
        "spec": {
            "model_name": model,
            "model": {"d_model": 64},
            "workload_name": workload,
            "workload": {"kind": "infer" if workload.startswith("infer") else "train"},
            "techniques": [{"name": t, "config": {}} for t in techniques],
            "batch_size": batch_size,
            "seq_len": seq_len,
            "device": "cuda" if gpu_peak is not None else "cpu",
            "dtype": "float32",
            "repeats": 1,
        },
        "status": status,
        "error": None if ok else f"{status}: something went wrong",
        "host_rss_base_bytes": 240 * MiB,
        "host_rss_peak_bytes": 240 * MiB + peak if ok else None,
        "host_rss_peak_above_base_bytes": peak if ok else None,
        "host_peak_method": "vmhwm",
        "phases": {"measured": {"duration_s": 0.5, "host_rss_peak_bytes": 240 * MiB + peak if ok else None}},
        "gpu_peak_allocated_bytes": gpu_peak if ok else None,
        "gpu_peak_reserved_bytes": gpu_peak if ok else None,
        "gpu_unavailable_reason": None if gpu_peak is not None else "no CUDA device",
        "step_time_s": steps if ok else [],
        "step_time_s_median": sorted(steps)[len(steps) // 2] if ok and steps else None,
        "tokens_per_s": batch_size * seq_len / sorted(steps)[len(steps) // 2] if ok and steps else None,
        "loss": (loss if loss is not None else [10.4, 10.3, 10.2, 10.1, 10.0]) if ok else [],
        "timing_source": "memory_pass",
        "timeline_file": None,
        "artifacts": {},
    }
    record.update(extra)
    return record


def make_timeline(peak: int, n: int = 200, base: int = 240 * MiB) -> dict[str, Any]:
    """A timeline that climbs to base + peak in the measured phase, with three phases."""
    t = [i * 0.02 for i in range(n)]
    rss = [base + int(peak * min(1.0, max(0.0, (i - n / 3) / (n / 3)))) for i in range(n)]
    third = t[-1] / 3
    phases = [
        {"name": "build", "t_start_s": 0.0, "t_end_s": third},
        {"name": "warmup", "t_start_s": third, "t_end_s": 2 * third},
        {"name": "measured", "t_start_s": 2 * third, "t_end_s": t[-1]},
    ]
    return {
        "t_s": t,
        "host_rss_bytes": rss,
        "gpu_process_bytes": None,
        "gpu_device_bytes": None,
        "phases": phases,
    }


def make_manifest(
    run_id: str = "run-a", commit: str = "abc1234", started_at: str = "2025-01-01T00:00:00Z", **kw: Any
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "suite": "suites/smoke.yaml",
        "suite_name": "smoke",
        "git_commit": commit,
        "git_dirty": False,
        "harness_version": "0.1.0",
        "torch_version": "2.13.0",
        "python_version": "3.11.9",
        "cpu_model": "Test CPU @ 2.0GHz",
        "cpu_count": 2,
        "gpu_names": [],
        "gpu_driver_version": None,
        "host": "ci-host",
        "started_at": started_at,
        "ended_at": started_at,
    }
    manifest.update(kw)
    return manifest


def write_run(
    root: Path,
    records: list[dict[str, Any]],
    manifest: dict[str, Any] | None = None,
    *,
    timelines: bool = True,
    n_samples: int = 200,
) -> Path:
    """Write results/<run-id>/ with manifest, results.jsonl and (optionally) a timeline per ok case."""
    run_id = records[0]["run_id"] if records else "run-empty"
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest or make_manifest(run_id)))
    for rec in records:
        if timelines and rec["status"] == "ok":
            rel = f"cases/{rec['case_id']}/timeline.json"
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(
                json.dumps(make_timeline(rec["host_rss_peak_above_base_bytes"], n_samples))
            )
            rec["timeline_file"] = rel
    with (run_dir / "results.jsonl").open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    return run_dir


def smoke_records(run_id: str = "run-a", **kw: Any) -> list[dict[str, Any]]:
    """A small realistic run: ci/train with four cases (one unsupported), ci/infer with two."""
    return [
        make_record("ci", "train", (), run_id=run_id, peak=400 * MiB, **kw),
        make_record(
            "ci",
            "train",
            ("activation_checkpointing",),
            run_id=run_id,
            peak=250 * MiB,
            step_times=[0.13, 0.14, 0.13, 0.15],
            **kw,
        ),
        make_record(
            "ci", "train", ("sdpa_attention",), run_id=run_id, peak=330 * MiB, step_times=[0.09] * 4, **kw
        ),
        make_record("ci", "train", ("fsdp",), run_id=run_id, status="unsupported", **kw),
        make_record("ci", "infer", (), run_id=run_id, peak=120 * MiB, loss=[9.0, 9.0], **kw),
        make_record("ci", "infer", ("autocast_bf16",), run_id=run_id, peak=90 * MiB, loss=[9.01, 9.01], **kw),
    ]
