"""Which metrics a comparison judges, and how: built-in defaults, overridden per metric and per suite.

A policy file (YAML or JSON; strict keys) looks like:

    version: 1
    metrics:                       # for every suite; a known metric needs only the fields it changes
      step_time_s: {gate: false}   # shown, never fails the gate (e.g. on shared CI runners)
    suites:
      smoke:
        metrics:
          host_rss_peak_above_base_bytes: {rel: 0.01}
          phases.measured.host_rss_peak_bytes: {kind: memory}   # any flattened record key

A metric name is a flattened record key (docs/results.md), or `final_loss` (the last step's loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness import metrics
from harness.errors import HarnessError

MiB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryPolicy(_Strict):
    """Bytes, lower is better: regressed when current - baseline > max(abs_bytes, rel x baseline)."""

    kind: Literal["memory"] = "memory"
    gate: bool = True
    abs_bytes: int = Field(default=MiB, ge=0)  # one allocator arena: memray's granularity between runs
    rel: float = Field(default=0.005, ge=0, allow_inf_nan=False)  # above RSS noise (~0.4 %), below +1 %


class TimePolicy(_Strict):
    """Seconds per step, lower is better: a bootstrap interval on the ratio of medians."""

    kind: Literal["time"] = "time"
    gate: bool = True
    threshold: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    min_samples: int = Field(default=3, ge=1)  # per side; fewer gives "insufficient data", not a guess
    confidence: float = Field(default=0.95, gt=0, lt=1)
    resamples: int = Field(default=2000, ge=100)
    seed: int = Field(default=0, ge=0)


class QualityPolicy(_Strict):
    """A loss, lower is better: regressed when it rose by more than max(abs_tol, rel x |baseline|)."""

    kind: Literal["quality"] = "quality"
    gate: bool = True
    abs_tol: float = Field(default=1e-5, ge=0, allow_inf_nan=False)
    rel: float = Field(default=1e-4, ge=0, allow_inf_nan=False)  # torchtune's rtol: "loss unchanged"


MetricPolicy = Annotated[MemoryPolicy | TimePolicy | QualityPolicy, Field(discriminator="kind")]
_METRIC = TypeAdapter(MetricPolicy)

_POLICY_OF_GATE: dict[str, type[MemoryPolicy] | type[TimePolicy] | type[QualityPolicy]] = {
    "memory": MemoryPolicy,
    "time": TimePolicy,
    "quality": QualityPolicy,
}


def default_metrics() -> dict[str, MemoryPolicy | TimePolicy | QualityPolicy]:
    """The metric catalog says which metrics are judged by default, and how (harness/metrics/catalog.py)."""
    return {name: _POLICY_OF_GATE[str(m.gate)]() for name, m in metrics.gate_defaults().items()}


DEFAULT_METRICS = default_metrics()


class SuitePolicy(_Strict):
    metrics: dict[str, dict[str, Any]] = {}


class PolicyFile(_Strict):
    version: Literal[1] = 1
    metrics: dict[str, dict[str, Any]] = {}
    suites: dict[str, SuitePolicy] = {}

    def for_suite(self, suite: str | None) -> dict[str, MemoryPolicy | TimePolicy | QualityPolicy]:
        """Defaults, then this file's metrics, then its suite's metrics; each layer merges field by field."""
        resolved = default_metrics()
        layers = [self.metrics]
        if suite is not None and suite in self.suites:
            layers.append(self.suites[suite].metrics)
        for layer in layers:
            for name, fields in layer.items():
                resolved[name] = _merge(name, resolved.get(name), fields)
        return resolved


def _merge(
    name: str, current: MemoryPolicy | TimePolicy | QualityPolicy | None, fields: dict[str, Any]
) -> MemoryPolicy | TimePolicy | QualityPolicy:
    # A changed kind starts from that kind's defaults; otherwise the fields given override the current ones.
    same_kind = current is not None and fields.get("kind", current.kind) == current.kind
    base = current.model_dump() if current is not None and same_kind else {}
    if "kind" not in fields and not base:
        raise HarnessError(f"policy: metrics.{name}: a new metric needs `kind` (memory, time or quality)")
    try:
        return _METRIC.validate_python({**base, **fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        where = ".".join(loc[1:] if loc and loc[0] in _POLICY_OF_GATE else loc)  # drop the kind tag
        msg = str(first["msg"])
        if first["type"] == "extra_forbidden":
            kind = str(fields.get("kind") or (current.kind if current is not None else ""))
            known = (
                [f for f in _POLICY_OF_GATE[kind].model_fields if f != "kind"]
                if kind in _POLICY_OF_GATE
                else []
            )
            msg = f"unknown field; a {kind} policy takes {', '.join(known)}" if known else msg
        raise HarnessError(f"policy: metrics.{name}.{where}: {msg}") from exc


def load_policy(path: Path | None) -> PolicyFile:
    """Read a policy file (YAML or JSON); no file means the built-in defaults."""
    if path is None:
        return PolicyFile()
    if not path.is_file():
        raise HarnessError(f"{path}: policy file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        policy = PolicyFile.model_validate(data)
        for suite in [None, *policy.suites]:  # resolve every layer now, so a bad field names this file
            policy.for_suite(suite)
        return policy
    except HarnessError as exc:
        raise HarnessError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: not YAML/JSON: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HarnessError(
            f"{path}: {where}: {first['msg']} (valid top-level keys: version, metrics, suites)"
        ) from exc
