"""A generator of malformed suites: every one is refused by `harness validate` with exit 2 and ONE line
that names the file and the key (or line) at fault; no traceback, none slow.

Each class mutates a valid suite in many ways (model ranges, defaults, matrix, workloads, techniques,
YAML structure, encodings); the expected key is part of each generated item.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main

BASE: dict[str, Any] = {
    "version": 1,
    "name": "gen",
    "defaults": {"warmup_steps": 1, "measured_steps": 1},
    "models": {"tiny": {"size": "ci"}},
    "workloads": {"train": {"kind": "train", "batch_size": 2, "seq_len": 16}},
    "techniques": {"base": [], "ckpt": ["activation_checkpointing"]},
    "matrix": {"model": ["tiny"], "workload": ["train"], "techniques": ["base", "ckpt"]},
}
PER_ITEM_BOUND_S = 5.0  # generous: every item is refused in milliseconds when the machine is quiet

Item = tuple[str, bytes, str]  # (id, file content, text the one error line must contain)


def dumped(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    suite = copy.deepcopy(BASE)
    mutate(suite)
    return yaml.safe_dump(suite, sort_keys=False).encode()


def setter(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(suite: dict[str, Any]) -> None:
        node = suite
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def model_items() -> Iterator[Item]:
    bad: dict[str, list[Any]] = {
        "vocab_size": [0, -1, -50000, 100],
        "d_model": [0, -128],
        "n_layers": [0, -3],
        "n_heads": [0, -4, 3, 5, 7],
        "d_ff": [0, -1],
        "max_seq_len": [0, -16, 8],  # 8 < the workload's seq_len 16
        "dropout": [5.0, -0.1, 1.0, float("nan")],
        "layer_norm_eps": [0.0, -1e-5, float("inf"), float("nan")],
        "activation": ["relux", "swish", 3],
        "pos_encoding": ["rope", ""],
        "attention": ["flash", None],
        "tie_embeddings": ["yes", 1],
        "bias": ["no"],
        "size": ["tiniest", "gpt3", 7],
    }
    for field, values in bad.items():
        for v in values:
            key = "models.tiny" if field == "max_seq_len" and v == 8 else f"models.tiny.{field}"
            if field == "vocab_size" and v == 100:
                key = "models.tiny.vocab_size"
            yield f"model-{field}={v!r}", dumped(setter("models", "tiny", field, value=v)), key
    yield "model-unknown-key", dumped(setter("models", "tiny", "n_layer", value=2)), "models.tiny.n_layer"
    yield "model-not-mapping", dumped(setter("models", "tiny", value="ci")), "models.tiny"
    yield "model-list", dumped(setter("models", "tiny", value=["ci"])), "models.tiny"


def defaults_items() -> Iterator[Item]:
    bad: dict[str, list[Any]] = {
        "seed": [-1, 2**63, 2**64, 1.5, "0"],
        "timeout_s": [float("inf"), float("nan"), 0, -1, 1e12, "10"],
        "warmup_steps": [-1, "2"],
        "measured_steps": [0, -5],
        "repeats": [0],
        "threads": [0, -2],
        "memory_limit_bytes": [0, -5, "1GB"],
        "sample_interval_ms": [0.5, 100, float("nan")],
        "device": ["gpu", "cdua", "CPU"],
        "dtype": ["fp16", "bf16"],
        "data": ["text", "corpuss"],
        "corpus_text_file": ["/nonexistent/file.txt", "/", "/tmp"],
        "reference_steps": [-1],
        "heldout_batches": [0],
        "quality": ["yes"],
        "breakdown": [2],
        "timing_pass": ["no"],
        "host_malloc_mmap_threshold_bytes": [-1],
        "warmup_stepz": [1],
    }
    for field, values in bad.items():
        for v in values:
            yield f"defaults-{field}={v!r}", dumped(setter("defaults", field, value=v)), f"defaults.{field}"


def matrix_items() -> Iterator[Item]:
    axes: dict[str, list[Any]] = {
        "batch_size": [[0], [-1], [], ["a"], [1.5], [True], [2, 0], 4],
        "seq_len": [[1], [0], [-16], ["x"]],
        "model": [["tinny"], ["nope"], [], "tiny", [["tiny"]], [{"a": 1}]],
        "workload": [["trian"], []],
        "techniques": [["bas"], ["ckpt", "zzz"], []],
        "bogus": [1],
        "batchsize": [[2]],
        "exclude": [[["tiny"]], ["tiny"], [{"model": ["tiny"]}], [{"model": {"a": 1}}], [{"modle": "tiny"}],
                    [{"batch_size": 0}], "tiny"],
        "include": [[{"model": "tiny"}], [["tiny"]],
                    [{"model": "tiny", "workload": "train", "techniques": "x"}],
                    [{"model": "tiny", "workload": "train", "techniques": "base", "batch_size": 0}],
                    [{"model": "tiny", "workload": "train", "techniques": "base", "seq_len": [16]}]],
        "defaults": [{"seed": -1}, {"devic": "cpu"}, "x"],
    }  # fmt: skip
    for axis, values in axes.items():
        for v in values:
            yield f"matrix-{axis}={v!r}", dumped(setter("matrix", axis, value=v)), f"matrix.{axis}"
    everything = [{"techniques": "base"}, {"techniques": "ckpt"}]
    yield "matrix-zero-cases", dumped(setter("matrix", "exclude", value=everything)), "matrix"
    yield "matrix-empty-list", dumped(setter("matrix", value=[])), "matrix"
    yield "matrix-scalar", dumped(setter("matrix", value="all")), "matrix"
    one_key_short = [{"model": ["tiny"], "workload": ["train"]}]
    yield "matrix-list-entry", dumped(setter("matrix", value=one_key_short)), "matrix[0].techniques"
    yield "matrix-missing", dumped(lambda s: s.pop("matrix")), "matrix"
    many = list(range(1, 102))
    huge = setter("matrix", value={"model": ["tiny"], "workload": ["train"], "techniques": ["base"],
                                   "batch_size": many, "seq_len": [16 + i for i in many]})  # fmt: skip
    yield "matrix-over-the-cap", dumped(huge), "matrix"


def workload_items() -> Iterator[Item]:
    bad: list[tuple[str, Any, str]] = [
        ("kind", "trian", "workloads.train.kind"),
        ("kind", None, "workloads.train.kind"),
        ("kind", 3, "workloads.train.kind"),
        ("batch_size", 0, "workloads.train.batch_size"),
        ("batch_size", -2, "workloads.train.batch_size"),
        ("batch_size", "8", "workloads.train.batch_size"),
        ("seq_len", 1, "workloads.train.seq_len"),
        ("seq_len", 0, "workloads.train.seq_len"),
        ("seq_len", 4096, "matrix"),  # above the ci model's max_seq_len 512
        ("lr", 1, "workloads.train.lr"),
        ("bogus", 1, "workloads.train.bogus"),
    ]
    for field, v, key in bad:
        yield f"workload-{field}={v!r}", dumped(setter("workloads", "train", field, value=v)), key
    yield "workload-not-mapping", dumped(setter("workloads", "train", value="train")), "workloads.train"
    yield "workloads-empty", dumped(setter("workloads", value={})), "workloads"


def technique_items() -> Iterator[Item]:
    bad: list[tuple[Any, str]] = [
        (["activation_checkpointin"], "techniques.ckpt[0]"),
        (["nope"], "techniques.ckpt[0]"),
        ([["activation_checkpointing"]], "techniques.ckpt[0]"),
        ([{"activation_checkpointing": 3}], "techniques.ckpt[0]"),
        ([{"activation_checkpointing": {"bogus": 1}}], "techniques.ckpt[0].activation_checkpointing.bogus"),
        ([{"a": 1, "b": 2}], "techniques.ckpt[0]"),
        (["activation_checkpointing", "activation_checkpointing"], "techniques.ckpt"),
        ("activation_checkpointing", "techniques.ckpt"),
        ([3], "techniques.ckpt[0]"),
        ([None], "techniques.ckpt[0]"),
        ([{"gradient_accumulation": {"micro_batches": 0}}], "techniques.ckpt[0].gradient_accumulation"),
    ]
    for v, key in bad:
        yield f"technique={v!r}", dumped(setter("techniques", "ckpt", value=v)), key
    yield "techniques-empty", dumped(setter("techniques", value={})), "techniques"


GOOD = dumped(lambda s: None).decode()


def yaml_items() -> Iterator[Item]:
    yield "dup-top-level", (GOOD + "version: 1\n").encode(), "duplicate key 'version'"
    dup_nested = GOOD.replace("  tiny:\n    size: ci\n", "  tiny:\n    size: ci\n    size: small\n")
    yield "dup-nested", dup_nested.encode(), "duplicate key 'size'"
    dup_models = GOOD + "models:\n  tiny: {size: ci}\n"
    yield "dup-section", dup_models.encode(), "duplicate key 'models'"
    laughs = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    yield "billion-laughs", ("version: 1\n" + laughs + "name: *i\n").encode(), "expands to more than"
    yield "deep-flow", ("version: 1\nname: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nest"
    deep_block = (
        "version: 1\nname:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 120)) + "  " * 120 + "x\n"
    )
    yield "deep-block", deep_block.encode(), "nested deeper"
    yield "tab-indent", GOOD.replace("  tiny:", "\ttiny:").encode(), "line"
    yield "unclosed", (GOOD + "extra: [1, 2\n").encode(), "line"
    yield "stray-indent", (GOOD + "  stray: 1\n").encode(), "matrix.stray"
    yield "bad-indent", (GOOD + " - stray\n").encode(), "line"
    yield "empty-file", b"", "a suite is a YAML mapping"
    yield "scalar-file", b"hello\n", "a suite is a YAML mapping"
    yield "list-file", b"- a\n- b\n", "a suite is a YAML mapping"
    yield "version-2", GOOD.replace("version: 1", "version: 2").encode(), "version"
    yield "unknown-top", (GOOD + "matrixx: 1\n").encode(), "matrixx"
    yield "non-str-key", (GOOD + "1: x\n").encode(), "1"
    yield "control-char", (GOOD + "name2: a\x07b\n").encode(), "character"
    yield "unknown-tag", (GOOD + "x: !!python/object:os.system ls\n").encode(), "line"


def encoding_items() -> Iterator[Item]:
    yield "latin1", GOOD.replace("gen", "g\xe9n").encode("latin-1"), "byte offset"
    yield "utf16-bom", GOOD.encode("utf-16"), "UTF-16"
    yield "utf16-le", GOOD.encode("utf-16-le"), "byte offset 1"
    yield "utf32", GOOD.encode("utf-32"), "UTF-32"
    yield "binary", bytes(range(256)) * 4, "byte offset 0"
    yield "lone-ff", b"version: 1\n\xff\n", "byte offset 11"
    yield "truncated-utf8", "name: \u00e9".encode()[:-1], "byte offset"


CLASSES = {
    "model": model_items,
    "defaults": defaults_items,
    "matrix": matrix_items,
    "workload": workload_items,
    "technique": technique_items,
    "yaml": yaml_items,
    "encoding": encoding_items,
}
ITEMS = [(cls, *item) for cls, gen in CLASSES.items() for item in gen()]


def validate(path: Path) -> tuple[int, list[str], float]:
    """`harness validate PATH` as the CLI runs it, in this process: (exit code, stderr lines, seconds)."""
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    return code, err.getvalue().splitlines(), time.perf_counter() - t0


@pytest.fixture(scope="module", autouse=True)
def _imports_done(tmp_path_factory):
    """Validate the good suite once first: the per-item bound is about refusing, not importing."""
    path = tmp_path_factory.mktemp("warm") / "good.yaml"
    path.write_text(GOOD)
    validate(path)


def test_the_generator_covers_every_class_with_many_items():
    assert len(ITEMS) >= 100
    per_class = {cls: sum(1 for item in ITEMS if item[0] == cls) for cls in CLASSES}
    assert min(per_class.values()) >= 5, per_class


def test_the_base_suite_is_valid(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert validate(path)[:2] == (0, [])


@pytest.mark.parametrize(("cls", "name", "content", "key"), ITEMS, ids=[f"{i[0]}:{i[1]}" for i in ITEMS])
def test_each_malformed_suite_is_one_line_naming_file_and_key(tmp_path, cls, name, content, key):
    path = tmp_path / "suite.yaml"
    path.write_bytes(content)
    code, lines, seconds = validate(path)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"harness: error: {path}"), lines
    assert key in lines[0], lines
    assert "Traceback" not in lines[0] and len(lines[0]) < 2000
    assert seconds < PER_ITEM_BOUND_S
