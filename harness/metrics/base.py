"""What a metric is: the fields every catalog entry carries. Pure data, no torch, no pandas."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["memory", "time", "throughput", "compute", "quality", "count", "ratio", "label"]
Better = Literal["lower", "higher", "none"]
Gate = Literal["memory", "time", "quality"]
Scope = Literal["record", "manifest", "timeline", "derived"]

# The record's unit (as written in the catalog) -> the kind of figure it is. A list of values keeps the
# kind of its elements ("s, list").
UNIT_KINDS: dict[str, Kind] = {
    "bytes": "memory",
    "s": "time",
    "1/s": "throughput",
    "FLOP/s": "throughput",
    "FLOPs": "compute",
    "nats": "quality",
    "objective": "quality",
    "count": "count",
    "integer": "count",
    "fraction": "ratio",
    "ratio": "ratio",
    "1": "ratio",
    "weight units": "ratio",
    "text": "label",
    "bool": "label",
    "timestamp": "label",
    "path": "label",
    "setting": "label",
    "list of text": "label",
    "list of objects": "label",
}
DEFAULT_BETTER: dict[Kind, Better] = {
    "memory": "lower",
    "time": "lower",
    "throughput": "higher",
    "quality": "lower",
    "compute": "none",
    "count": "none",
    "ratio": "none",
    "label": "none",
}
# How a record unit is shown on screen by default, and what a shown unit divides the stored value by.
SCREEN_UNITS: dict[str, str] = {"bytes": "MiB"}
SCALES: dict[str, float] = {"MiB": 2.0**20, "ms": 1e-3}


def base_unit(unit: str) -> str:
    """`s, list` -> `s`: the unit of one value."""
    return re.sub(r", list( of lists)?$", "", unit)


@dataclass(frozen=True)
class Metric:
    """One figure: its record key, unit and meaning, and how tables, gates and docs treat it.

    `name` is a flattened record key (`phases.<phase>.duration_s`: `<...>` stands for one dotted
    segment or name fragment). Fields left empty are derived from the unit and the name.
    """

    name: str
    unit: str
    definition: str
    measured: str = ""
    absent: str = ""
    kind: Kind | None = None
    better: Better | None = None
    gate: Gate | None = None  # the compare policy a metric gets by default; None: not judged
    display: str = ""  # column header / axis title, without the unit
    screen_unit: str = ""  # e.g. "ms" for a figure stored in s; default from SCREEN_UNITS / unit
    fmt: str = ""  # format spec of one shown value
    rename: str = ""  # a name that breaks the unit convention: the name proposed for it
    column: int = 0  # position as a column of the report's tables (HTML, markdown); 0: not a column
    scope: Scope = "record"
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unit = base_unit(self.unit)
        if unit not in UNIT_KINDS:
            raise ValueError(f"metric {self.name}: unknown unit {self.unit!r}; one of {sorted(UNIT_KINDS)}")
        kind = self.kind or UNIT_KINDS[unit]
        set_ = object.__setattr__  # frozen: derived defaults are filled once, here
        set_(self, "kind", kind)
        set_(self, "better", self.better or DEFAULT_BETTER[kind])
        set_(self, "display", self.display or _display_of(self.name))
        set_(self, "screen_unit", self.screen_unit or SCREEN_UNITS.get(unit, unit))
        set_(self, "fmt", self.fmt or _default_fmt(kind))
        set_(self, "pattern", name_pattern(self.name))

    @property
    def scale(self) -> float:
        """Divide a stored value by this to show it in `screen_unit`."""
        return SCALES.get(self.screen_unit, 1.0)

    @property
    def header(self) -> str:
        """`display, unit` for a table column; dimensionless figures carry no unit word."""
        unit = self.screen_unit
        bare = unit in ("1", "ratio", "text", "count", "integer")
        return self.display if bare else f"{self.display}, {unit}"

    def show(self, value: object) -> str:
        """One value as a table shows it; `-` for not measured."""
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(float(value) / self.scale, self.fmt)
        return str(value)


@dataclass(frozen=True)
class Section:
    """A group of metrics in docs/metrics.md, with the prose that explains how they are measured."""

    title: str
    metrics: tuple[Metric, ...]
    intro: tuple[str, ...] = ()
    outro: tuple[str, ...] = ()
    level: int = 2
    scope: Scope = "record"

    def __post_init__(self) -> None:
        # A section's metrics share its scope (manifest, timeline, derived): set once, here.
        if self.scope != "record":
            scoped = tuple(dataclasses.replace(m, scope=self.scope) for m in self.metrics)
            object.__setattr__(self, "metrics", scoped)


def name_pattern(name: str) -> re.Pattern[str]:
    """`phases.<phase>.duration_s` -> a regex where each `<...>` matches one segment or fragment."""
    return re.compile("[^.]+".join(re.escape(part) for part in re.split(r"<[^>]+>", name)))


UNIT_SUFFIX_WORDS = ("_bytes", "_s", "_count", "_fraction", "_nats", "_flops", "_flop_per_s", "_per_s")


def _display_of(name: str) -> str:
    """`breakdown.activations_bytes` -> `activations`: the last segment, unit suffix dropped."""
    last = name.rsplit(".", 1)[-1]
    for stat in ("_median", "_iqr", "_max"):
        last = last.removesuffix(stat)
    for suffix in UNIT_SUFFIX_WORDS:
        if last.endswith(suffix) and last != suffix:
            last = last.removesuffix(suffix)
            break
    return last.replace("_", " ")


def _default_fmt(kind: str) -> str:
    return {"memory": ".1f", "time": ".4f", "throughput": ",.0f", "quality": ".4f", "count": ",.0f"}.get(
        kind, ".3g"
    )
