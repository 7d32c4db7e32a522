"""A result record (one line of results.jsonl) as a typed object that speaks the catalog's names."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.metrics.catalog import HEADLINE_MEMORY, QUALITY_ORDER


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with '.'-joined keys; lists stay values (docs/metrics.md, Conventions)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Headline:
    """One headline figure: the catalog name it came from (None: not measured) and its value."""

    metric: str | None
    value: float | None


@dataclass(frozen=True)
class Record:
    """One case's result. Labels are attributes; every figure is read through `value(name)`."""

    raw: Mapping[str, Any]
    flat: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flat", flatten(self.raw))

    @classmethod
    def from_json(cls, line: str) -> Record:
        return cls(json.loads(line))

    # ---- labels -------------------------------------------------------------------------------------

    @property
    def case_id(self) -> str:
        return str(self.raw.get("case_id") or "")

    @property
    def case_name(self) -> str:
        return str(self.raw.get("case_name") or "")

    @property
    def status(self) -> str:
        return str(self.raw.get("status") or "")

    @property
    def device(self) -> str:
        return str(self.raw.get("device") or "cpu")

    @property
    def techniques(self) -> list[str]:
        return list(self.raw.get("techniques") or [])

    @property
    def is_baseline(self) -> bool:
        return not self.techniques

    # ---- figures ------------------------------------------------------------------------------------

    def value(self, name: str) -> Any:
        """A figure by its catalog name; None when the record does not carry it (or it is null)."""
        if name == "final_loss":
            loss = self.raw.get("loss")
            return float(loss[-1]) if isinstance(loss, list) and loss else None
        value = self.flat.get(name)
        return None if _missing(value) else value

    def metrics(self) -> Iterator[tuple[str, Any]]:
        """(flattened key, value) for every figure present; keys outside the catalog included."""
        for key, value in self.flat.items():
            if not _missing(value):
                yield key, value

    def _first(self, names: tuple[str, ...]) -> Headline:
        for name in names:
            value = self.value(name)
            if value is not None:
                return Headline(name, float(value))
        return Headline(None, None)

    def tensor_peak(self) -> Headline:
        """The headline tensor figure of this record's device (catalog HEADLINE_MEMORY)."""
        return self._first(HEADLINE_MEMORY.get(self.device, HEADLINE_MEMORY["cpu"])[0])

    def process_peak(self) -> Headline:
        """The headline process figure of this record's device."""
        return self._first(HEADLINE_MEMORY.get(self.device, HEADLINE_MEMORY["cpu"])[1])

    def quality(self) -> Headline:
        return self._first(QUALITY_ORDER)
