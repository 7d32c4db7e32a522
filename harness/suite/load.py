"""Load a suite file strictly and expand it into cases.

Every refusal is a SuiteError naming the file, the key path, what is allowed and the closest match.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import stat
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from harness import techniques as techreg
from harness import workloads as wlreg
from harness.case import CaseSpec, TechniqueSpec
from harness.errors import SuiteError, SuiteErrors, allowed, closest
from harness.models.config import CONFIG_FIELDS, SIZES, ConfigValueError, ModelConfig, range_problems
from harness.models.source import EntryError, resolve_entry
from harness.suite.schema import Defaults, MatrixEntry, ModelEntry, Suite

AXES = ("model", "workload", "techniques", "batch_size", "seq_len")
# Bounds that keep a mistake (or a hostile file) from taking validation down: a suite is a page of text.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000  # YAML nodes after alias expansion (a billion-laughs file expands to ~10^9)
MAX_DEPTH = 64  # nesting levels; a real suite uses about 6
MAX_CASES = 10_000  # expanded cases, counted before expanding
SHOWN_CHARS = 80  # of a bad value, in a message


@dataclass(frozen=True)
class LoadedSuite:
    path: str
    name: str
    sha256: str
    suite: Suite
    cases: list[CaseSpec]


class _Collect:
    """Every mistake of a file, so one `validate` lists them all (one line each)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.errors: list[SuiteError] = []

    def add(self, key_path: str, problem: str) -> None:
        self.errors.append(SuiteError(self.label, key_path, problem))

    def keep(self, err: SuiteError | SuiteErrors) -> None:
        self.errors.extend(err.errors if isinstance(err, SuiteErrors) else [err])

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise SuiteErrors(self.errors)


def load_suite(path: str | Path) -> LoadedSuite:
    label = str(path)
    data = _read_file(label, Path(path))
    text = _decode(label, data)
    found = _Collect(label)
    raw, single_matrix = _parse_yaml(label, text, found)
    suite = _validate(label, raw, single_matrix, found)
    if suite is None:
        _check_sections(label, raw, found)  # the sections that are well-shaped still get their checks
        found.raise_if_any()
        raise SuiteError(label, "", "not a valid suite")  # unreachable: a failed validation adds errors
    name = suite.name or Path(path).stem
    cases = expand(label, name, suite, found, single_matrix)
    found.raise_if_any()
    # the hash of the text as Python's read_text gives it (universal newlines), as earlier runs stored it
    digest = hashlib.sha256(text.replace("\r\n", "\n").replace("\r", "\n").encode()).hexdigest()
    return LoadedSuite(label, name, digest, suite, cases)


def _read_file(label: str, path: Path) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES: a FIFO, a device or a directory is refused before
    it is opened (a FIFO would block, /dev/zero would never end)."""
    try:
        st = path.stat()
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e)
        raise SuiteError(label, "", f"cannot read the suite file ({why}); check the path") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise SuiteError(label, "", f"{kind}; give a suite .yaml file")
    if st.st_size > MAX_FILE_BYTES:
        raise SuiteError(
            label, "", f"{st.st_size} bytes, more than the {MAX_FILE_BYTES} a suite file may have"
        )
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise SuiteError(label, "", f"cannot read the suite file ({e.strerror}); check the path") from None
    if len(data) > MAX_FILE_BYTES:
        raise SuiteError(label, "", f"more than the {MAX_FILE_BYTES} bytes a suite file may have")
    return data


def _decode(label: str, data: bytes) -> str:
    """UTF-8 text (a UTF-8 BOM is fine); anything else is named with its byte offset."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):  # fmt: skip
        if data.startswith(bom):
            raise SuiteError(label, "", f"encoded as {name} (byte order mark at byte 0); save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise SuiteError(
            label, f"line {line}", f"NUL byte at byte offset {nul}: a binary or UTF-16 file; save it as UTF-8"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SuiteError(
            label,
            f"line {line}",
            f"not UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start}; save it as UTF-8",
        ) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys (PyYAML silently keeps the last)."""

    duplicates: list[tuple[str, int, int]]
    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # The composer recurses once per level: refuse deep nesting here, before Python's stack gives out.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call,unused-ignore]
                raise yaml.YAMLError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, seen[key_node.value], line))
                seen.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(label: str, text: str, found: _Collect) -> tuple[dict[str, Any], bool]:
    """(the suite mapping, whether `matrix` was one mapping rather than a list)."""
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters already here
        loader.duplicates = []
    except yaml.YAMLError as e:
        raise SuiteError(label, *_yaml_problem(e, text)) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_size(label, node)
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise SuiteError(label, *_yaml_problem(e, text)) from None
    except RecursionError:
        raise SuiteError(
            label, "", f"nested too deep to parse; a suite nests at most {MAX_DEPTH} levels"
        ) from None
    finally:
        loader.dispose()
    for key, first, second in loader.duplicates:
        found.add(
            f"line {second}", f"duplicate key {_short(key)} (first at line {first}); give each key once"
        )
    if not isinstance(raw, dict):
        raise SuiteError(
            label, "", "a suite is a YAML mapping with version, models, workloads, techniques, matrix"
        )
    single = isinstance(raw.get("matrix"), dict)
    if single:
        raw["matrix"] = [raw["matrix"]]  # one matrix or a list of them; one shape for validation
    return raw, single


def _yaml_problem(e: yaml.YAMLError, text: str) -> tuple[str, str]:
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.reader.ReaderError):
        char = e.character if isinstance(e.character, int) else ord(e.character)
        line = text.count("\n", 0, e.position) + 1
        offset = len(text[: e.position].encode())
        return (
            f"line {line}",
            f"control character U+{char:04X} at byte offset {offset} is not allowed in YAML",
        )
    if type(e) is yaml.YAMLError:  # ours (nesting): the message carries its line
        where, _, problem = str(e).partition(": ")
        return where, problem
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return where, f"not valid YAML: {problem}"


def _check_size(label: str, root: yaml.Node) -> None:
    """Refuse a document whose alias expansion or nesting is out of bounds, before constructing it."""
    sizes: dict[int, int] = {}
    # iterative post-order walk, so a deep file cannot overflow Python's stack here
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise SuiteError(label, f"line {line}", f"nested deeper than {MAX_DEPTH} levels")
        children = _children(node)
        if done:
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            sizes[id(node)] = total
            if total > MAX_NODES:
                raise SuiteError(
                    label,
                    "",
                    f"expands to more than {MAX_NODES} YAML nodes (aliases of aliases?); simplify it",
                )
            continue
        if id(node) in sizes:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _validate(label: str, raw: dict[str, Any], single_matrix: bool, found: _Collect) -> Suite | None:
    try:
        return Suite.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            found.add(_key_path(_real_loc(loc, single_matrix)), _explain(err, loc))
        return None
    except RecursionError:
        found.add("", f"nested deeper than {MAX_DEPTH} levels")
        return None


def _check_sections(label: str, raw: dict[str, Any], found: _Collect) -> None:
    """With the suite as a whole refused, still check each well-shaped model, workload and technique
    combination, so one `validate` lists every mistake."""
    checks: tuple[tuple[str, Any, type], ...] = (
        ("models", _check_model_entry, dict),
        ("workloads", _workload_config, dict),
        ("techniques", _technique_list, list),
    )
    for section, check, shape in checks:
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        for name, value in table.items():
            reported = any(p.startswith(f"{section}.{name}") for p in _paths(found))
            if not isinstance(name, str) or not isinstance(value, shape) or reported:
                continue
            try:
                check(label, name, value)
            except SuiteError as err:
                found.keep(err)
            except (TypeError, ValueError, AttributeError):
                continue  # a wrong shape, already reported by the schema


def _paths(found: _Collect) -> list[str]:
    return [e.key_path for e in found.errors]


def _check_model_entry(label: str, name: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(value.get("size"), str):
        _model_config(label, name, value["size"], {k: v for k, v in value.items() if k != "size"})


def _real_loc(loc: tuple[Any, ...], single_matrix: bool) -> tuple[Any, ...]:
    """The key path as the user wrote it: `matrix.x`, not `matrix[0].x`, for a single matrix mapping."""
    if single_matrix and len(loc) > 1 and loc[0] == "matrix" and loc[1] == 0:
        return ("matrix", *loc[2:])
    return loc


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _explain(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        return f"unknown key; allowed: {allowed(fields)}{closest(str(loc[-1]), fields)}"
    if kind == "missing":
        return "required key is missing"
    shapes = {"model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
              "list_type": "a list", "string_type": "a string (a name)"}  # fmt: skip
    if kind in shapes:  # pydantic's own wording names its internal classes
        return f"must be {shapes[kind]} (got {_short(err.get('input'))})"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        hint = closest(str(err["input"]), choices) if isinstance(err["input"], str) else ""
        return f"{_short(err['input'])} is not allowed; expected {expected}{hint}"
    return f"{err['msg'].lower()} (got {_short(err.get('input'))})"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the schema model found at `loc` (for 'allowed keys' in messages)."""
    node: Any = Suite
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the items' model is found by _unwrap below
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


def expand(
    label: str, suite_name: str, suite: Suite, found: _Collect | None = None, single_matrix: bool = False
) -> list[CaseSpec]:
    """The suite's cases; every mistake found is added to `found` (raised at once when it is None)."""
    own = found is None
    found = found or _Collect(label)
    models = _each(found, suite.models, lambda n, e: _model_entry(label, n, e), label, "models")
    workloads = _each(
        found, suite.workloads, lambda n, raw: _workload_config(label, n, raw), label, "workloads"
    )
    combos = _each(
        found, suite.techniques, lambda n, items: _technique_list(label, n, items), label, "techniques"
    )
    _check_combos(label, combos, found)
    named = {"model": models, "workload": workloads, "techniques": combos}
    sections: dict[str, Mapping[str, Any]] = {
        "model": suite.models,
        "workload": suite.workloads,
        "techniques": suite.techniques,
    }
    broken = {axis: set(sections[axis]) - set(table) for axis, table in named.items()}
    wheres = [("matrix" if single_matrix else f"matrix[{m}]", entry) for m, entry in enumerate(suite.matrix)]
    total = sum(_count(entry) for _, entry in wheres)
    if total > MAX_CASES:
        found.add("matrix", f"expands to {total} cases, more than the cap of {MAX_CASES}; split the suite")
    cases: dict[str, CaseSpec] = {}
    if total <= MAX_CASES:
        for where, entry in wheres:
            _expand_block(label, where, suite_name, suite, entry, named, broken, found, cases)
    if not cases and not found.errors:
        found.add("matrix", "expands to 0 cases (everything is excluded); nothing would run")
    _check_data_files(label, suite, found)
    if own:
        found.raise_if_any()
    return list(cases.values())


def _expand_block(
    label: str,
    where: str,
    suite_name: str,
    suite: Suite,
    entry: MatrixEntry,
    named: dict[str, dict[str, Any]],
    broken: dict[str, set[str]],
    found: _Collect,
    cases: dict[str, CaseSpec],
) -> None:
    try:
        defaults = _block_defaults(label, where, suite.defaults, entry.defaults)
    except SuiteError as err:
        found.keep(err)
        return
    models, workloads, combos = named["model"], named["workload"], named["techniques"]
    reported: set[str] = set()
    for point in _points(label, where, entry, named, broken, found):
        try:
            case = _case(label, where, suite_name, defaults, point, models, workloads, combos)
        except SuiteError as err:
            if err.key_path not in reported:  # one line per key, not one per case it spoils
                reported.add(err.key_path)
                found.keep(err)
            continue
        cases.setdefault(case.case_id, case)


def _each(found: _Collect, table: Mapping[str, Any], make: Any, label: str, section: str) -> dict[str, Any]:
    """make(name, value) for each entry; a refused entry is recorded and left out."""
    out = {}
    for name, value in table.items():
        try:
            _check_entry_name(label, section, name)
            out[name] = make(name, value)
        except SuiteError as err:
            found.keep(err)
    return out


def _check_entry_name(label: str, section: str, name: str) -> None:
    """A case is named model/workload/techniques and printed on terminals: a `/` would make two cases
    read alike, a control character would reach the terminal as one (an escape sequence)."""
    bad = [c for c in name if c == "/" or unicodedata.category(c).startswith("C")]
    if bad or not name.strip():
        what = f"{bad[0]!r}" if bad else "nothing but spaces"
        why = "case names join names with '/'" if "/" in bad else "it is printed in every table"
        raise SuiteError(label, f"{section}.{name!r}", f"a name cannot be or hold {what} ({why}); rename it")


def _check_combos(label: str, combos: dict[str, list[TechniqueSpec]], found: _Collect) -> None:
    for name in list(combos):
        try:
            _check_conflicts(label, name, combos[name])
        except SuiteError as err:
            found.keep(err)
            del combos[name]


def _count(entry: MatrixEntry) -> int:
    """Cases a matrix block makes before excludes (an upper bound), from the axis lengths alone."""
    n = len(entry.model) * len(entry.workload) * len(entry.techniques)
    return n * len(entry.batch_size or [None]) * len(entry.seq_len or [None]) + len(entry.include)


def _check_data_files(label: str, suite: Suite, found: _Collect) -> None:
    """corpus_text_file must be a readable regular file now, not when a case is half set up."""
    blocks = [("defaults", suite.defaults.model_dump())]
    blocks += [(f"matrix[{m}].defaults", e.defaults) for m, e in enumerate(suite.matrix) if e.defaults]
    for where, values in blocks:
        name = values.get("corpus_text_file")
        if not isinstance(name, str):
            continue
        path = Path(name).expanduser()
        try:
            ok = stat.S_ISREG(path.stat().st_mode) and os.access(path, os.R_OK)
        except (OSError, ValueError):
            ok = False
        if not ok:
            found.add(f"{where}.corpus_text_file", f"{_short(name)} is not a readable file; give a text file")


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
                f"unknown key; allowed: size, {allowed(CONFIG_FIELDS)}{closest(str(key), CONFIG_FIELDS)}",
            )
    merged = {**SIZES[size].to_dict(), **overrides}
    problems = range_problems(merged)
    if len(problems) > 1:  # every field out of range, one line each
        raise SuiteErrors([SuiteError(label, f"{where}.{f}", p) for f, p in problems])
    try:
        _MODEL_FIELDS.model_validate(merged)
        return ModelConfig(**merged).to_dict()
    except ValidationError as e:
        err = e.errors()[0]
        raise SuiteError(label, f"{where}.{_key_path(tuple(err['loc']))}", _explain(err, ())) from None
    except ConfigValueError as e:
        raise SuiteError(label, f"{where}.{e.field}", e.problem) from None


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


def _technique_list(label: str, combo: str, items: list[Any]) -> list[TechniqueSpec]:
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
                label,
                where,
                f"unknown technique {name!r}; allowed: {allowed(known)}{closest(str(name), known)}",
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
        errors = [_option_error(label, where, config_cls, err) for err in e.errors()]
        raise (errors[0] if len(errors) == 1 else SuiteErrors(errors)) from None


def _option_error(label: str, where: str, config_cls: type[BaseModel], err: Any) -> SuiteError:
    """One line per mistake in a technique's options: an unknown key names the allowed ones."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        fields = list(config_cls.model_fields)
        choices = allowed(fields) or "(none: this one takes no options)"
        problem = f"unknown key; allowed: {choices}{closest(str(loc[-1]), fields)}"
    elif err["type"] == "value_error" and not loc:  # the options' own cross-field check: its message
        problem = str(err["msg"]).removeprefix("Value error, ")
    else:
        problem = _explain(err, loc)
    return SuiteError(label, f"{where}.{_key_path(loc)}" if loc else where, problem)


def _points(
    label: str,
    where: str,
    entry: MatrixEntry,
    named: dict[str, dict[str, Any]],
    broken: dict[str, set[str]],
    found: _Collect,
) -> list[dict[str, Any]]:
    """The block's points; a point naming an entry that was itself refused is dropped (already reported)."""
    for axis, table in named.items():
        for i, value in enumerate(getattr(entry, axis)):
            _check_name(label, f"{where}.{axis}[{i}]", axis, value, table, broken[axis], found)
    axes: dict[str, list[Any]] = {
        "model": entry.model,
        "workload": entry.workload,
        "techniques": entry.techniques,
        "batch_size": entry.batch_size or [None],
        "seq_len": entry.seq_len or [None],
    }
    points = [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*axes.values())]
    for i, rule in enumerate(entry.exclude):
        if _check_rule(label, f"{where}.exclude[{i}]", rule, named, broken, found, partial=True):
            points = [p for p in points if not all(p.get(k) == v for k, v in rule.items())]
    for i, rule in enumerate(entry.include):
        if _check_rule(label, f"{where}.include[{i}]", rule, named, broken, found, partial=False):
            points.append({"batch_size": None, "seq_len": None, **rule})
    return [p for p in points if all(isinstance(p[a], str) and p[a] in named[a] for a in named)]


def _check_name(
    label: str, where: str, axis: str, value: Any, table: dict[str, Any], broken: set[str], found: _Collect
) -> bool:
    """True when `value` names a valid entry of `table`; a refused entry is not reported again."""
    if isinstance(value, str) and value in table:
        return True
    if isinstance(value, str) and value in broken:
        return False
    section = "models" if axis == "model" else f"{axis}s" if axis == "workload" else axis
    names = [*table, *broken]
    hint = closest(value, names) if isinstance(value, str) else ""
    kind = "" if isinstance(value, str) else " (a name is expected here)"
    found.add(where, f"{_short(value)}{kind} is not defined under {section}; defined: {allowed(names)}{hint}")
    return False


AXIS_MIN = {"batch_size": 1, "seq_len": 2}  # as the workloads' own batch_size / seq_len


def _check_rule(
    label: str,
    where: str,
    rule: dict[str, Any],
    named: dict[str, Any],
    broken: dict[str, set[str]],
    found: _Collect,
    partial: bool,
) -> bool:
    ok = True
    for key, value in rule.items():
        if key not in AXES:
            found.add(f"{where}.{key}", f"unknown key; allowed: {allowed(AXES)}{closest(str(key), AXES)}")
            ok = False
        elif key in named:
            ok &= _check_name(label, f"{where}.{key}", key, value, named[key], broken[key], found)
        elif not isinstance(value, int) or isinstance(value, bool) or value < AXIS_MIN[key]:
            found.add(f"{where}.{key}", f"must be an integer >= {AXIS_MIN[key]} (got {_short(value)})")
            ok = False
    missing = [k for k in ("model", "workload", "techniques") if k not in rule]
    if not partial and missing:
        found.add(where, f"an include names a whole case; missing: {', '.join(missing)}")
        ok = False
    return ok


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
    label: str,
    where: str,
    suite_name: str,
    d: Defaults,
    point: dict[str, Any],
    models: dict[str, dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    combos: dict[str, list[TechniqueSpec]],
) -> CaseSpec:
    """One case; a value the case would crash on is refused here, naming the key that set it."""
    wl = workloads[point["workload"]]
    model = models[point["model"]]
    # `is None`, not `or`: a 0 given on an axis is refused above, never silently replaced
    batch = wl["batch_size"] if point["batch_size"] is None else point["batch_size"]
    seq = wl["seq_len"] if point["seq_len"] is None else point["seq_len"]
    case = CaseSpec(
        suite=suite_name,
        model_name=point["model"],
        model=model,
        workload_name=point["workload"],
        workload=wl,
        techniques_name=point["techniques"],
        techniques=combos[point["techniques"]],
        batch_size=batch,
        seq_len=seq,
        **d.model_dump(),
    )
    if case.seq_len > model["max_seq_len"]:
        raise SuiteError(
            label,
            where,
            f"{case.name}: seq_len {case.seq_len} exceeds the model's max_seq_len "
            f"{model['max_seq_len']}; raise max_seq_len under models.{point['model']}",
        )
    if case.data == "corpus" and model["vocab_size"] < BYTE_VOCAB:
        raise SuiteError(
            label,
            f"models.{point['model']}.vocab_size",
            f"{case.name}: the byte corpus (data: corpus) needs vocab_size >= {BYTE_VOCAB}, the model has "
            f"{model['vocab_size']}; raise vocab_size or set data: random",
        )
    return case


# Byte-level corpus tokens are 0..255 (harness/corpus.py): a smaller vocabulary cannot embed them.
BYTE_VOCAB = 256
