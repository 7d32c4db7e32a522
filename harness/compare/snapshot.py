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

from harness.errors import HarnessError
from harness.results.load import Run, flatten, read_run

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


@dataclass(frozen=True)
class Snapshot:
    source: str
    env: dict[str, Any]
    cases: list[CaseMetrics]
    run: dict[str, Any] = field(default_factory=dict)  # run_id, commit, started_at of the run it came from

    def by_id(self) -> dict[str, CaseMetrics]:
        return {c.case_id: c for c in self.cases}

    def by_name(self) -> dict[str, CaseMetrics]:
        return {c.case_name: c for c in self.cases}


def metric_value(flat: dict[str, Any], name: str) -> Metric:
    """A metric of a flattened record: a number, a list of samples (step_time_s), or None."""
    if name == "final_loss":
        loss = flat.get("loss")
        return float(loss[-1]) if isinstance(loss, list) and loss else None
    value = flat.get(name)
    if isinstance(value, list):
        return [float(v) for v in value] if value else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if isinstance(value, float) else value


def case_metrics(record: dict[str, Any], names: Iterable[str]) -> CaseMetrics:
    flat = flatten(record)
    metrics = {n: metric_value(flat, n) for n in names}
    return CaseMetrics(
        case_id=str(record["case_id"]),
        case_name=str(record.get("case_name", record["case_id"])),
        suite=record.get("suite"),
        status=str(record.get("status", "ok")),
        error=record.get("error"),
        metrics={k: v for k, v in metrics.items() if v is not None},
        timing_source=record.get("timing_source"),
    )


def snapshot_of_run(run: Run, names: Iterable[str]) -> Snapshot:
    names = list(names)
    env = run.env
    origin = {"run_id": run.run_id, "commit": env.get("commit"), "started_at": env.get("started_at")}
    cases = [case_metrics(r, names) for r in run.records]
    return Snapshot(source=str(run.run_dir), env=_env_only(env), cases=cases, run=origin)


def _env_only(env: dict[str, Any]) -> dict[str, Any]:
    # commit and start time identify the run, they are not its environment
    return {k: v for k, v in env.items() if k not in ("commit", "dirty", "started_at")}


def is_baseline_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json"


def read_baseline(path: Path) -> Snapshot:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not a JSON baseline file ({exc.msg})") from exc
    if not isinstance(data, dict) or data.get("baseline_version") != BASELINE_VERSION:
        raise HarnessError(f"{path}: not a baseline file (baseline_version {BASELINE_VERSION} expected)")
    cases = [CaseMetrics(**c) for c in data["cases"]]
    return Snapshot(source=str(path), env=data.get("env", {}), cases=cases, run=data.get("source", {}))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(baseline_json(snapshot), encoding="utf-8")
    return path
