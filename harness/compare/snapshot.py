"""What a comparison reads: a run (directory or results.jsonl) or a committed baseline file, reduced to
case identity + the gated metrics + the environment. A baseline file is exactly this, as small JSON:

    {"baseline_version": 1, "source": {"run_id", "commit", "started_at"}, "env": {...},
     "cases": [{"case_id", "case_name", "suite", "status", "error", "metrics": {name: value}}]}

Refresh one with `harness compare results/baselines/NAME.json results/<run-id> --update-baseline`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import EXIT_INSUFFICIENT, HarnessError, write_text_file
from harness.metrics.record import flatten
from harness.results.load import Run, read_run

BASELINE_VERSION = 1
Metric = float | list[float] | None


@dataclass(frozen=True)
class CaseMetrics:
    case_id: str
    case_name: str
    suite: str | None
    status: str
    error: str | None
    metrics: dict[str, Metric] = field(default_factory=dict)
    # Which process timed the steps: `timing_pass` (system allocator) or `memory_pass` (a low mmap
    # threshold, 1.2-2.3x slower). Step times from different sources are not comparable.
    timing_source: str | None = None
    # The machine that ran the case (`node` of the record: CPU model and GPUs). Step times measured on
    # different hardware are not comparable, whatever the executor.
    hardware: str | None = None
    # Why the case's host memory figures were disturbed (the kernel reclaimed its pages under memory
    # pressure, case_runner.file_reclaim_fields), or None: such figures read low, never "unchanged".
    host_memory_disturbed: str | None = None


@dataclass(frozen=True)
class Snapshot:
    source: str
    env: dict[str, Any]
    cases: list[CaseMetrics]
    run: dict[str, Any] = field(default_factory=dict)  # run_id, commit, started_at of the run it came from
    # What could not be read from the source: the comparison cannot vouch for a run it only half read.
    problems: tuple[str, ...] = ()
    # Why a run is not whole (stopped before it ended, or fewer records than cases), or None: a baseline
    # must not be written from it.
    incomplete: str | None = None

    def by_id(self) -> dict[str, CaseMetrics]:
        return {c.case_id: c for c in self.cases}

    def by_name(self) -> dict[str, CaseMetrics]:
        return {c.case_name: c for c in self.cases}


def metric_value(flat: dict[str, Any], name: str) -> Metric:
    """A metric of a flattened record: a number, a list of samples (step_time_s), or None. NaN and inf
    are kept (the judge fails them); a value that is not a number at all is None."""
    if name == "final_loss":
        loss = flat.get("loss")
        return _number(loss[-1]) if isinstance(loss, list) and loss else None
    return stored_value(flat.get(name))


def stored_value(value: Any) -> Metric:
    """A number, or a non-empty list of numbers (non-numbers dropped), else None."""
    if isinstance(value, list):
        numbers = [float(n) for n in map(_number, value) if n is not None]
        return numbers or None
    return _number(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if isinstance(value, float) else value


def case_metrics(record: dict[str, Any], names: Iterable[str]) -> CaseMetrics:
    flat = flatten(record)
    metrics = {n: metric_value(flat, n) for n in names}
    error = record.get("error")
    return CaseMetrics(
        case_id=str(record["case_id"]),
        case_name=str(record.get("case_name", record["case_id"])),
        suite=_str_or_none(record.get("suite")),
        status=str(record.get("status", "ok")),
        error=None if error is None else str(error),
        metrics={k: v for k, v in metrics.items() if v is not None},
        timing_source=_str_or_none(record.get("timing_source")),
        hardware=hardware_of(record),
        host_memory_disturbed=_memory_disturbance(record),
    )


def _memory_disturbance(record: dict[str, Any]) -> str | None:
    if record.get("host_memory_disturbed") is not True:
        return None
    return str(record.get("host_memory_disturbed_reason") or "host memory disturbed")


def hardware_of(record: dict[str, Any]) -> str | None:
    """`cpu model | gpu names` of the node that ran the case, or None for records without `node`."""
    node = record.get("node")
    if not isinstance(node, dict) or not node.get("cpu_model"):
        return None
    gpus = ", ".join(str(g) for g in node.get("gpu_names") or []) or "no GPU"
    return f"{node['cpu_model']} | {gpus}"


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def snapshot_of_run(run: Run, names: Iterable[str]) -> Snapshot:
    names = list(names)
    env = run.env
    origin = {"run_id": run.run_id, "commit": env.get("commit"), "started_at": env.get("started_at")}
    cases = [case_metrics(r, names) for r in run.records]
    problems = tuple(f"{run.run_dir}: {p}" for p in run.problems)
    return Snapshot(str(run.run_dir), _env_only(env), cases, origin, problems, incomplete=_incomplete(run))


def _incomplete(run: Run) -> str | None:
    manifest = run.manifest
    expected = manifest.get("case_count")
    if not manifest.get("ended_at"):
        return "the run did not end (interrupted or still running: finish it with `harness run --resume`)"
    if isinstance(expected, int) and len(run.records) < expected:
        return f"{len(run.records)} records of {expected} cases"
    return None


def _env_only(env: dict[str, Any]) -> dict[str, Any]:
    # commit and start time identify the run, they are not its environment
    return {k: v for k, v in env.items() if k not in ("commit", "dirty", "started_at")}


def is_baseline_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json"


def read_baseline(path: Path) -> Snapshot:
    """A committed baseline file; one that cannot be read is insufficient data (exit 3), never a pass."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise HarnessError(
            f"{path}: not a readable JSON baseline file ({type(exc).__name__}: {str(exc)[:120]})",
            EXIT_INSUFFICIENT,
        ) from None
    if not isinstance(data, dict) or data.get("baseline_version") != BASELINE_VERSION:
        # valid JSON of another kind: the wrong file was given, a usage error
        raise HarnessError(f"{path}: not a baseline file (baseline_version {BASELINE_VERSION} expected)")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list):
        raise HarnessError(f"{path}: `cases` is not a list", EXIT_INSUFFICIENT)
    cases, problems = [], []
    for i, raw in enumerate(raw_cases):
        try:
            cases.append(_baseline_case(raw))
        except (TypeError, KeyError, ValueError) as exc:
            problems.append(f"{path}: cases[{i}] is not a baseline case ({type(exc).__name__}: {exc})"[:300])
    ids = [c.case_id for c in cases]
    problems += [
        f"{path}: case {i} appears {ids.count(i)} times" for i in sorted(set(ids)) if ids.count(i) > 1
    ]
    env: dict[str, Any] = data["env"] if isinstance(data.get("env"), dict) else {}
    run: dict[str, Any] = data["source"] if isinstance(data.get("source"), dict) else {}
    return Snapshot(str(path), env, cases, run, tuple(problems))


# What a record's `status` can be (harness/metrics/catalog.py).
RECORD_STATUSES = ("ok", "oom", "timeout", "error", "unsupported")


def _baseline_case(raw: Any) -> CaseMetrics:
    if not isinstance(raw, dict) or not isinstance(raw.get("case_id"), str):
        raise ValueError("a mapping with a case_id is expected")
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ValueError("metrics is not a mapping")
    values = {str(k): stored_value(v) for k, v in metrics.items()}
    # A value the file holds but that is no number (a string, true) is a broken file, not "not measured":
    # read as absent it would make every figure of the case "new", which passes.
    broken = [k for k, v in metrics.items() if v is not None and values[str(k)] is None]
    if broken:
        raise ValueError(f"metrics.{broken[0]} is {metrics[broken[0]]!r}, not a number")
    if raw.get("status") not in RECORD_STATUSES:
        raise ValueError(f"status {raw.get('status')!r} is not one of {', '.join(RECORD_STATUSES)}")
    return CaseMetrics(**{**raw, "metrics": {k: v for k, v in values.items() if v is not None}})


def load_snapshot(path: Path, names: Iterable[str]) -> Snapshot:
    """A baseline JSON file, a run directory, or a results.jsonl."""
    if not path.exists():
        raise HarnessError(
            f"{path}: does not exist; give a run directory, a results.jsonl or a baseline .json"
        )
    if is_baseline_file(path):
        return read_baseline(path)
    return snapshot_of_run(read_run(path), names)


def baseline_json(snapshot: Snapshot) -> str:
    """The committed form: one case per line so a refresh reads as a small git diff."""
    head = {"baseline_version": BASELINE_VERSION, "source": snapshot.run, "env": snapshot.env}
    cases = ",\n    ".join(
        json.dumps(asdict(c), sort_keys=True) for c in sorted(snapshot.cases, key=lambda c: c.case_name)
    )
    body = json.dumps(head, indent=2, sort_keys=True)[:-2]
    return f'{body},\n  "cases": [\n    {cases}\n  ]\n}}\n'


def write_baseline(snapshot: Snapshot, path: Path) -> Path:
    if path.suffix != ".json":
        raise HarnessError(
            f"{path}: a baseline file must end in .json (e.g. results/baselines/smoke-cpu.json)"
        )
    write_text_file(path, baseline_json(snapshot))
    return path
