"""Load a suite file strictly and expand it into cases.

Every refusal is a SuiteError naming the file, the key path, what is allowed and the closest match.
"""

from __future__ import annotations

import hashlib
import itertools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from harness import techniques as techreg
from harness import workloads as wlreg
from harness.case import CaseSpec, TechniqueSpec
from harness.errors import SuiteError, allowed, closest
from harness.models.config import CONFIG_FIELDS, SIZES, ModelConfig
from harness.models.source import EntryError, resolve_entry
from harness.suite.schema import Defaults, MatrixEntry, ModelEntry, Suite

AXES = ("model", "workload", "techniques", "batch_size", "seq_len")


@dataclass(frozen=True)
class LoadedSuite:
    path: str
    name: str
    sha256: str
    suite: Suite
    cases: list[CaseSpec]


def load_suite(path: str | Path) -> LoadedSuite:
    p = Path(path)
    label = str(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SuiteError(label, "", f"cannot read the suite file ({e.strerror}); check the path") from None
    raw = _parse_yaml(label, text)
    suite = _validate(label, raw)
    name = suite.name or p.stem
    cases = expand(label, name, suite)
    return LoadedSuite(label, name, hashlib.sha256(text.encode()).hexdigest(), suite, cases)


def _parse_yaml(label: str, text: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SuiteError(label, where, f"not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise SuiteError(
            label, "", "a suite is a YAML mapping with version, models, workloads, techniques, matrix"
        )
    if isinstance(raw.get("matrix"), dict):
        raw["matrix"] = [raw["matrix"]]  # one matrix or a list of them; one shape for validation
    return raw


def _validate(label: str, raw: dict[str, Any]) -> Suite:
    try:
        return Suite.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        raise SuiteError(label, _key_path(loc), _explain(err, loc)) from None


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        return f"unknown key; allowed: {allowed(fields)}{closest(str(loc[-1]), fields)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err['input']!r} is not allowed; expected {expected}"
    return f"{err['msg'].lower()} (got {err.get('input')!r})"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the schema model found at `loc` (for 'allowed keys' in messages)."""
    node: Any = Suite
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = node.model_fields[part].annotation if part in node.model_fields else None
        node = _unwrap(node, part)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unwrap(node: Any, part: Any) -> Any:
    """Step through Optional / list / dict annotations to the model inside them."""
    for arg in typing.get_args(node) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _unwrap(arg, part)
        if inner is not None:
            return inner
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


# ---- expansion -------------------------------------------------------------------------------------


def expand(label: str, suite_name: str, suite: Suite) -> list[CaseSpec]:
    models = {n: _model_entry(label, n, e) for n, e in suite.models.items()}
    workloads = {n: _workload_config(label, n, raw) for n, raw in suite.workloads.items()}
    combos = {n: _technique_list(label, n, items) for n, items in suite.techniques.items()}
    cases: dict[str, CaseSpec] = {}
    matrices = suite.matrix if isinstance(suite.matrix, list) else [suite.matrix]
    for m, entry in enumerate(matrices):
        where = f"matrix[{m}]" if len(matrices) > 1 else "matrix"
        defaults = _block_defaults(label, where, suite.defaults, entry.defaults)
        for point in _points(label, where, entry, models, workloads, combos):
            case = _case(suite_name, defaults, point, models, workloads, combos)
            if case.seq_len > case.model["max_seq_len"]:
                raise SuiteError(
                    label,
                    where,
                    f"{case.name}: seq_len {case.seq_len} exceeds the model's max_seq_len "
                    f"{case.model['max_seq_len']}; raise max_seq_len under models.{point['model']}",
                )
            _check_conflicts(label, point["techniques"], combos[point["techniques"]])
            cases.setdefault(case.case_id, case)
    return list(cases.values())


def _model_entry(label: str, name: str, entry: ModelEntry) -> dict[str, Any]:
    """The case `model` dict of one entry: a built-in size with overrides, or another source."""
    fields = {**({"size": entry.size} if entry.size is not None else {}), **(entry.model_extra or {})}
    try:
        resolved = resolve_entry(fields, Path(label).parent)
    except EntryError as e:
        raise SuiteError(label, f"models.{name}" + (f".{e.key}" if e.key else ""), e.problem) from None
    if resolved is not None:
        return resolved
    assert entry.size is not None  # resolve_entry returns None only for a `size:` entry
    return _model_config(label, name, entry.size, entry.model_extra or {})


def _model_config(label: str, name: str, size: str, overrides: dict[str, Any]) -> dict[str, Any]:
    where = f"models.{name}"
    if size not in SIZES:
        raise SuiteError(
            label, f"{where}.size", f"unknown size {size!r}; allowed: {allowed(SIZES)}{closest(size, SIZES)}"
        )
    for key in overrides:
        if key not in CONFIG_FIELDS:
            raise SuiteError(
                label,
                f"{where}.{key}",
                f"unknown key; allowed: size, {allowed(CONFIG_FIELDS)}{closest(key, CONFIG_FIELDS)}",
            )
    merged = {**SIZES[size].to_dict(), **overrides}
    try:
        _MODEL_FIELDS.model_validate(merged)
        return ModelConfig(**merged).to_dict()
    except ValidationError as e:
        err = e.errors()[0]
        raise SuiteError(label, f"{where}.{_key_path(tuple(err['loc']))}", _explain(err, ())) from None
    except ValueError as e:
        raise SuiteError(label, where, str(e)) from None


# The ModelConfig dataclass's fields as a strict pydantic model, so overrides get typed errors.
_MODEL_FIELDS: type[BaseModel] = create_model(
    "ModelFields",
    __config__=ConfigDict(strict=True, extra="forbid"),
    **{name: (hint, ...) for name, hint in typing.get_type_hints(ModelConfig).items()},  # type: ignore[call-overload]
)


def _workload_config(label: str, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    where = f"workloads.{name}"
    kind = raw.get("kind")
    kinds = wlreg.names()
    if not isinstance(kind, str) or kind not in kinds:
        hint = closest(kind, kinds) if isinstance(kind, str) else ""
        raise SuiteError(
            label, f"{where}.kind", f"unknown workload kind {kind!r}; allowed: {allowed(kinds)}{hint}"
        )
    return _validate_options(label, where, wlreg.get(kind).Config, raw)


def _technique_list(label: str, combo: str, items: list[str | dict[str, Any]]) -> list[TechniqueSpec]:
    specs = []
    known = techreg.names()
    options: dict[str, Any]
    for i, item in enumerate(items):
        where = f"techniques.{combo}[{i}]"
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            options = {} if options is None else options
            if not isinstance(options, dict):
                raise SuiteError(label, f"{where}.{name}", f"options must be a mapping (got {options!r})")
        else:
            raise SuiteError(label, where, "each item is a technique name or {name: {options}}")
        if name not in known:
            raise SuiteError(
                label, where, f"unknown technique {name!r}; allowed: {allowed(known)}{closest(name, known)}"
            )
        if name == "baseline":
            continue  # "no technique": [baseline] and [] are the same case
        cfg = _validate_options(label, f"{where}.{name}", techreg.get(name).Config, options)
        specs.append(TechniqueSpec(name=name, config=cfg))
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SuiteError(label, f"techniques.{combo}", f"{dup!r} is listed twice; list each technique once")
    order = techreg.compose((s.name, s.config) for s in specs)
    by_name = {s.name: s for s in specs}
    return [by_name[t.name] for t in order]


def _validate_options(
    label: str, where: str, config_cls: type[BaseModel], options: dict[str, Any]
) -> dict[str, Any]:
    try:
        return config_cls.model_validate(options).model_dump(mode="json")
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            fields = list(config_cls.model_fields)
            choices = allowed(fields) or "(none: this one takes no options)"
            problem = f"unknown key; allowed: {choices}{closest(str(loc[-1]), fields)}"
        else:
            problem = _explain(err, loc)
        raise SuiteError(label, f"{where}.{_key_path(loc)}", problem) from None


def _points(
    label: str,
    where: str,
    entry: MatrixEntry,
    models: dict[str, Any],
    workloads: dict[str, Any],
    combos: dict[str, Any],
) -> list[dict[str, Any]]:
    named = {"model": models, "workload": workloads, "techniques": combos}
    for axis, table in named.items():
        for i, value in enumerate(getattr(entry, axis)):
            _check_name(label, f"{where}.{axis}[{i}]", axis, value, table)
    axes: dict[str, list[Any]] = {
        "model": entry.model,
        "workload": entry.workload,
        "techniques": entry.techniques,
        "batch_size": entry.batch_size or [None],
        "seq_len": entry.seq_len or [None],
    }
    points = [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*axes.values())]
    for i, rule in enumerate(entry.exclude):
        _check_rule(label, f"{where}.exclude[{i}]", rule, named, partial=True)
        points = [p for p in points if not all(p[k] == v for k, v in rule.items())]
    for i, rule in enumerate(entry.include):
        _check_rule(label, f"{where}.include[{i}]", rule, named, partial=False)
        points.append({"batch_size": None, "seq_len": None, **rule})
    return points


def _check_name(label: str, where: str, axis: str, value: Any, table: dict[str, Any]) -> None:
    if value not in table:
        section = "models" if axis == "model" else f"{axis}s" if axis == "workload" else axis
        raise SuiteError(
            label,
            where,
            f"{value!r} is not defined under {section}; "
            f"defined: {allowed(table)}{closest(str(value), table)}",
        )


def _check_rule(label: str, where: str, rule: dict[str, Any], named: dict[str, Any], partial: bool) -> None:
    for key, value in rule.items():
        if key not in AXES:
            raise SuiteError(
                label, f"{where}.{key}", f"unknown key; allowed: {allowed(AXES)}{closest(str(key), AXES)}"
            )
        if key in named:
            _check_name(label, f"{where}.{key}", key, value, named[key])
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SuiteError(label, f"{where}.{key}", f"must be a positive integer (got {value!r})")
    missing = [k for k in ("model", "workload", "techniques") if k not in rule]
    if not partial and missing:
        raise SuiteError(label, where, f"an include names a whole case; missing: {', '.join(missing)}")


def _check_conflicts(label: str, combo: str, specs: list[TechniqueSpec]) -> None:
    reason = techreg.conflict(techreg.compose((s.name, s.config) for s in specs))
    if reason:
        raise SuiteError(label, f"techniques.{combo}", f"refused: {reason}")


def _block_defaults(label: str, where: str, defaults: Defaults, overrides: dict[str, Any]) -> Defaults:
    if not overrides:
        return defaults
    merged = _validate_options(label, f"{where}.defaults", Defaults, {**defaults.model_dump(), **overrides})
    return Defaults.model_validate(merged)


def _case(
    suite_name: str,
    d: Defaults,
    point: dict[str, Any],
    models: dict[str, dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    combos: dict[str, list[TechniqueSpec]],
) -> CaseSpec:
    wl = workloads[point["workload"]]
    return CaseSpec(
        suite=suite_name,
        model_name=point["model"],
        model=models[point["model"]],
        workload_name=point["workload"],
        workload=wl,
        techniques_name=point["techniques"],
        techniques=combos[point["techniques"]],
        batch_size=point["batch_size"] or wl["batch_size"],
        seq_len=point["seq_len"] or wl["seq_len"],
        **d.model_dump(),
    )
