"""Suite format v1: every shipped suite loads; every class of mistake is one line, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from harness.cli import main
from harness.errors import SuiteError
from harness.suite.load import load_suite

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
version: 1
models:
  tiny: {size: ci, n_layers: 2}
workloads:
  train: {kind: train, batch_size: 2, seq_len: 16}
  infer: {kind: infer, batch_size: 2, seq_len: 16}
techniques:
  baseline: []
  ckpt: [activation_checkpointing]
  ckpt2: [{activation_checkpointing: {every_k_blocks: 2}}]
matrix:
  model: [tiny]
  workload: [train, infer]
  techniques: [baseline, ckpt, ckpt2]
  exclude:
    - {workload: infer, techniques: ckpt}
  include:
    - {model: tiny, workload: train, techniques: baseline, seq_len: 32}
"""


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates(path):
    assert load_suite(path).cases


def test_matrix_expands_with_exclude_and_include(write_suite):
    cases = load_suite(write_suite(GOOD)).cases
    names = sorted(c.name for c in cases)
    assert names == sorted(
        [
            "tiny/train/baseline",
            "tiny/train/ckpt",
            "tiny/train/ckpt2",
            "tiny/infer/baseline",
            "tiny/infer/ckpt2",
            "tiny/train/baseline@b2s32",
        ]
    )


def test_case_ids_are_stable_content_hashes(write_suite):
    a = {c.name: c.case_id for c in load_suite(write_suite(GOOD, "a.yaml")).cases}
    b = {c.name: c.case_id for c in load_suite(write_suite(GOOD, "b.yaml")).cases}
    assert a == b
    assert len(set(a.values())) == len(a)
    # A changed definition changes the id; a changed run setting (timeout) does not.
    changed = GOOD.replace("n_layers: 2", "n_layers: 3")
    assert {c.case_id for c in load_suite(write_suite(changed, "c.yaml")).cases}.isdisjoint(a.values())
    timeout = GOOD.replace("version: 1\n", "version: 1\ndefaults: {timeout_s: 5}\n")
    assert {c.name: c.case_id for c in load_suite(write_suite(timeout, "d.yaml")).cases} == a


def test_renaming_a_combination_keeps_the_id(write_suite):
    renamed = GOOD.replace("ckpt2", "every_second")
    ids = {c.case_id for c in load_suite(write_suite(renamed, "r.yaml")).cases}
    assert ids == {c.case_id for c in load_suite(write_suite(GOOD)).cases}


def test_baseline_written_as_a_name_is_the_empty_combination(write_suite):
    text = GOOD.replace("baseline: []", "baseline: [baseline]")
    assert {c.case_id for c in load_suite(write_suite(text)).cases} == {
        c.case_id for c in load_suite(write_suite(GOOD, "g.yaml")).cases
    }


BAD = [
    # (what, edit of GOOD, key path in the message, words that must appear)
    (
        "unknown top-level key",
        ("matrix:", "matirx: {}\nmatrix:"),
        "matirx",
        ["unknown key", "did you mean 'matrix'"],
    ),
    (
        "unknown defaults key",
        ("version: 1\n", "version: 1\ndefaults: {warmup_stepz: 1}\n"),
        "defaults.warmup_stepz",
        ["unknown key", "warmup_steps"],
    ),
    (
        "wrong type",
        ("version: 1\n", "version: 1\ndefaults: {measured_steps: many}\n"),
        "defaults.measured_steps",
        ["integer", "many"],
    ),
    ("bad version", ("version: 1", "version: 2"), "version", ["expected 1"]),
    (
        "unknown technique",
        ("[activation_checkpointing]", "[activation_checkpointin]"),
        "techniques.ckpt[0]",
        ["unknown technique", "did you mean 'activation_checkpointing'"],
    ),
    (
        "unknown technique option",
        ("every_k_blocks: 2", "every_k_block: 2"),
        "techniques.ckpt2[0].activation_checkpointing.every_k_block",
        ["unknown key", "every_k_blocks"],
    ),
    (
        "bad option value",
        ("every_k_blocks: 2", "every_k_blocks: 0"),
        "techniques.ckpt2[0].activation_checkpointing.every_k_blocks",
        ["greater than or equal to 1"],
    ),
    (
        "unknown model in matrix",
        ("model: [tiny]", "model: [tinny]"),
        "matrix.model[0]",
        ["not defined under models", "did you mean 'tiny'"],
    ),
    ("unknown size", ("size: ci", "size: cj"), "models.tiny.size", ["unknown size", "did you mean 'ci'"]),
    (
        "unknown model field",
        ("n_layers: 2", "n_layer: 2"),
        "models.tiny.n_layer",
        ["unknown key", "n_layers"],
    ),
    ("model field type", ("n_layers: 2", "n_layers: two"), "models.tiny.n_layers", ["integer"]),
    (
        "unknown workload kind",
        ("kind: infer", "kind: inference"),
        "workloads.infer.kind",
        ["unknown workload kind", "did you mean 'infer'"],
    ),
    (
        "unknown exclude axis",
        ("{workload: infer, techniques: ckpt}", "{workloads: infer}"),
        "matrix.exclude[0].workloads",
        ["unknown key", "did you mean 'workload'"],
    ),
    ("seq too long", ("seq_len: 32", "seq_len: 4096"), "matrix", ["exceeds the model's max_seq_len"]),
    (
        "duplicate technique",
        ("[activation_checkpointing]", "[activation_checkpointing, activation_checkpointing]"),
        "techniques.ckpt",
        ["listed twice"],
    ),
]


@pytest.mark.parametrize("what,edit,key_path,words", BAD, ids=[b[0] for b in BAD])
def test_each_mistake_is_one_line_naming_file_and_key(write_suite, capsys, what, edit, key_path, words):
    old, new = edit
    assert old in GOOD
    path = write_suite(GOOD.replace(old, new, 1))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith(f"harness: error: {path}: {key_path}")
    for w in words:
        assert w in err


def test_conflicting_pair_is_refused_with_the_reason(write_suite, monkeypatch):
    from harness.techniques import base

    class _Conflicting(base.Technique):
        """Test-only technique that refuses to combine with checkpointing."""

        name = "_test_conflicting"
        phase = base.Phase.STEP
        conflicts: ClassVar[dict[str, str]] = {"activation_checkpointing": "both rewrite the blocks"}

    try:
        text = GOOD.replace("[activation_checkpointing]", "[activation_checkpointing, _test_conflicting]")
        with pytest.raises(SuiteError) as e:
            load_suite(write_suite(text))
        assert "techniques.ckpt: refused: activation_checkpointing conflicts with _test_conflicting" in str(
            e.value
        )
        assert "both rewrite the blocks" in str(e.value)
    finally:
        base.Technique.registry.pop("_test_conflicting")


def test_not_yaml_and_not_a_mapping(write_suite, capsys):
    assert main(["validate", str(write_suite("version: [1\n"))]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["validate", str(write_suite("- 1\n"))]) == 2
    assert "a suite is a YAML mapping" in capsys.readouterr().err


def test_missing_file(capsys):
    assert main(["validate", "no/such/suite.yaml"]) == 2
    assert "cannot read the suite file" in capsys.readouterr().err
