"""Model sources: published parameter counts of every preset (meta device, nothing allocated), the suite
entry checks (one line naming file, key and fix; exit 2), and the contract of a factory module."""

from __future__ import annotations

import dataclasses

import pytest

from harness.cli import main
from harness.models.config import SIZES, count_params
from harness.models.hf import PRESETS, HfModelConfig, resolve_preset
from harness.models.hf_fields import FIELDS
from harness.models.source import spec_of
from harness.suite.load import load_suite
from tests.conftest import run_cli

# Published figures (model cards / safetensors metadata); each also follows from the config arithmetic
# of ModelSpec.param_count, checked below without transformers.
PUBLISHED = {
    "gpt2": 124_439_808,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-7b": 7_615_616_512,
}


def test_every_preset_has_a_published_count():
    assert set(PUBLISHED) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_the_config_arithmetic_gives_the_published_count(preset):
    spec = spec_of(resolve_preset(preset, {}))
    assert spec is not None and spec.param_count() == PUBLISHED[preset]


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_the_built_model_has_the_published_count_on_the_meta_device(preset):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harness.models.hf_build import build_hf

    with torch.device("meta"):
        model = build_hf(resolve_preset(preset, {}))
    params = {id(p): p for p in model.parameters()}.values()  # a tied head counted once
    assert all(p.is_meta for p in params)  # nothing allocated
    assert sum(p.numel() for p in params) == PUBLISHED[preset]


def test_overrides_reach_the_built_model():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harness.models.hf_build import build_hf

    cfg = resolve_preset("llama-3.1-8b", {"num_hidden_layers": 4})
    with torch.device("meta"):
        model = build_hf(cfg)
    spec = spec_of(cfg)
    assert len(model.hf.model.layers) == 4 and spec is not None
    assert sum(p.numel() for p in model.parameters()) == spec.param_count()


@pytest.mark.parametrize("size", sorted(SIZES))
def test_the_builtin_spec_counts_what_the_builtin_model_has(size):
    cfg = SIZES[size]
    for c in (cfg, cfg.replace(tie_embeddings=True, pos_encoding="sinusoidal", bias=False)):
        spec = spec_of(c)
        assert spec is not None and spec.param_count() == count_params(c)


def test_the_field_table_is_that_of_the_installed_transformers():
    transformers = pytest.importorskip("transformers")
    from harness.models.hf import CLASSES

    for family, (config_cls, _) in CLASSES.items():
        live = {f.name for f in dataclasses.fields(getattr(transformers, config_cls))}
        assert set(FIELDS[family]) == live, family


def test_builtin_entries_keep_their_case_dict_so_their_ids_do_not_change(write_suite):
    suite = write_suite(
        """\
        version: 1
        models: {tiny: {size: ci, n_layers: 2}}
        workloads: {w: {kind: train}}
        techniques: {base: []}
        matrix: {model: [tiny], workload: [w], techniques: [base]}
        """
    )
    (case,) = load_suite(suite).cases
    assert case.model == SIZES["ci"].replace(n_layers=2).to_dict()


def test_a_local_config_file_with_overrides(write_suite, tmp_path):
    (tmp_path / "cfg.json").write_text(
        '{"model_type": "llama", "torch_dtype": "bfloat16", "hidden_size": 64, "intermediate_size": 128,'
        ' "num_attention_heads": 4, "num_key_value_heads": 1, "num_hidden_layers": 3, "vocab_size": 256,'
        ' "rope_theta": 10000.0, "max_position_embeddings": 512}'
    )
    suite = write_suite(
        """\
        version: 1
        models: {mine: {hf_config: cfg.json, num_hidden_layers: 2}}
        workloads: {w: {kind: train, seq_len: 64}}
        techniques: {base: []}
        matrix: {model: [mine], workload: [w], techniques: [base]}
        """
    )
    (case,) = load_suite(suite).cases
    cfg = HfModelConfig.from_dict(case.model)
    spec = spec_of(cfg)
    assert spec is not None
    assert (spec.family, spec.n_layers, spec.n_kv_heads, spec.head_dim) == ("llama", 2, 1, 16)
    assert "torch_dtype" not in cfg.config  # bookkeeping of a real config.json is dropped


BAD = {
    "unknown preset": ("{hf: llama-3-8b}", "models.m.hf: unknown preset 'llama-3-8b'", "did you mean"),
    "unknown field": ("{hf: gpt2, n_layers: 2}", "models.m.n_layers: unknown gpt2 config field", "'n_layer'"),
    "wrong type": ("{hf: gpt2, n_layer: two}", "models.m.n_layer: expected int", "'two'"),
    "two sources": ("{hf: gpt2, size: ci}", "models.m: name exactly one of", "found: size, hf"),
    "no module": (
        '{factory: "no_such_pkg.models:build"}',
        "models.m.factory: cannot find module",
        "PYTHONPATH",
    ),
    "no function": ('{factory: "harness.models.example_factory:biuld"}', "defines no 'biuld'", "'build'"),
    "bad target": ('{factory: "harness.models.example_factory"}', "expected 'module:function'", "mypkg"),
    # What transformers would refuse only at build time (a traceback cut to one line by then).
    "heads do not divide the width": (
        "{hf: llama-3.2-1b, hidden_size: 64, num_attention_heads: 3, num_key_value_heads: 3}",
        "models.m.num_attention_heads: hidden_size 64 is not a multiple of num_attention_heads 3",
        "choose heads",
    ),
    "kv heads do not divide the heads": (
        "{hf: qwen2.5-0.5b, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 3}",
        "models.m.num_key_value_heads: num_key_value_heads 3 does not divide num_attention_heads 4",
        "divisor",
    ),
    "gpt2 heads do not divide the width": (
        "{hf: gpt2, n_embd: 64, n_head: 3}",
        "models.m.n_head: n_embd 64 is not a multiple of n_head 3",
        "choose heads",
    ),
    "no layers": ("{hf: gpt2, n_layer: 0}", "models.m.n_layer: must be a positive whole number", "got 0"),
    "factory path": (
        '{factory: "harness.models.example_factory:build", path: /nonexistent}',
        "models.m.path: /nonexistent is not a folder",
        "holds the module",
    ),
    "factory key": (
        '{factory: "harness.models.example_factory:build", kwarg: {}}',
        "models.m.kwarg",
        "'kwargs'",
    ),
}


def _bad_suite(write_suite, entry):
    return write_suite(
        f"""\
        version: 1
        models: {{m: {entry}}}
        workloads: {{w: {{kind: train}}}}
        techniques: {{base: []}}
        matrix: {{model: [m], workload: [w], techniques: [base]}}
        """
    )


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_entries_are_one_line_naming_the_file_and_key_with_exit_2(what, write_suite, capsys):
    entry, where, hint = BAD[what]
    path = _bad_suite(write_suite, entry)
    assert main(["validate", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and where in lines[0] and hint in lines[0], lines[0]


def test_the_real_cli_refuses_an_unknown_config_field_without_a_traceback(write_suite):
    path = _bad_suite(write_suite, "{hf: qwen2.5-7b, num_hiden_layers: 4}")
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "models.m.num_hiden_layers: unknown qwen2 config field" in proc.stderr
    assert "did you mean 'num_hidden_layers'?" in proc.stderr and "Traceback" not in proc.stderr


def test_a_factory_that_returns_the_wrong_thing_names_the_contract(tmp_path):
    pytest.importorskip("torch")
    from harness.models.build import build_factory
    from harness.models.factory import resolve

    (tmp_path / "bad_factory.py").write_text("def build(width=1):\n    return {'width': width}\n")
    cfg = resolve({"factory": "bad_factory:build", "kwargs": {"width": 3}}, [tmp_path])
    assert cfg.path == str(tmp_path.resolve())  # the case process imports from here
    with pytest.raises(TypeError, match=r"returned a dict; it must return a torch.nn.Module"):
        build_factory(cfg)


def test_a_factory_module_from_the_suites_folder_is_found(tmp_path):
    from harness.models.factory import resolve

    (tmp_path / "my_models.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(1, 1)\n")
    cfg = resolve({"factory": "my_models:build"}, [tmp_path])
    assert (cfg.vocab_size, cfg.max_seq_len, cfg.path) == (256, 1024, str(tmp_path.resolve()))


def test_the_builtin_gpt2_small_has_transformers_gpt2s_parameter_count():
    # suites/gpt2_side_by_side.yaml compares them: the same count, so the figures differ by implementation.
    spec = spec_of(resolve_preset("gpt2", {}))
    assert spec is not None
    assert count_params(SIZES["gpt2-small"].replace(tie_embeddings=True)) == spec.param_count() == 124_439_808


def test_without_transformers_hf_entries_are_refused_with_the_install_hint(write_suite, monkeypatch, capsys):
    from harness.models import hf

    monkeypatch.setattr(hf, "transformers_available", lambda: False)
    path = _bad_suite(write_suite, "{hf: gpt2}")
    assert main(["validate", str(path)]) == 2
    assert "models.m.hf: hf models need transformers: pip install 'harness[hf]'" in capsys.readouterr().err
