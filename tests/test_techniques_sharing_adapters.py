"""Parameter sharing, adapters and LoRA on the ci model: exact parameter counts, frozen means frozen,
identity at initialisation, and the combinations with checkpointing and with each other."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from harness.errors import SuiteError
from harness.models.config import SIZES, count_params
from harness.runner.session import open_session
from harness.suite.load import load_suite
from harness.techniques import _adapter_modules

CI = SIZES["ci"]  # vocab 256, d 128, 4 layers, d_ff 512
D, L, V, F = CI.d_model, CI.n_layers, CI.vocab_size, CI.d_ff
# One block's parameters: the difference one more layer makes (n_layers >= 1 is the legal range).
BLOCK = count_params(CI.replace(n_layers=2)) - count_params(CI.replace(n_layers=1))
BOTTLENECK = 2 * D * 16 + 16 + D  # r = 16: down (r, d) + bias r, up (d, r) + bias d


def session(tmp_path: Path, techniques: list[Any], workload: str = "train", steps: int = 3) -> Any:
    """Open the one case of a suite with the ci model and the given technique list."""
    suite = {
        "version": 1,
        "defaults": {"warmup_steps": 0, "measured_steps": steps},
        "models": {"ci": {"size": "ci"}},
        "workloads": {
            "train": {"kind": "train", "batch_size": 2, "seq_len": 32},
            "infer": {"kind": "infer", "batch_size": 2, "seq_len": 32},
        },
        "techniques": {"t": techniques},
        "matrix": {"model": ["ci"], "workload": [workload], "techniques": ["t"]},
    }
    path = tmp_path / f"suite{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(suite))
    (case,) = load_suite(path).cases
    return open_session(case)


def unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() lists a shared tensor once


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def losses(s: Any, steps: int = 3) -> list[float]:
    return [s.step(i) for i in range(steps)]


def frozen_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = dict(model.named_parameters())
    assert before, "nothing was frozen"
    for name, value in before.items():
        assert torch.equal(now[name], value), f"frozen {name} changed"


# ---- tied embeddings and cross-layer sharing ---------------------------------------------------------


def test_tied_embeddings_removes_exactly_one_vocab_by_d_matrix(tmp_path: Path) -> None:
    base = session(tmp_path, []).model
    tied = session(tmp_path, ["tied_embeddings"])
    assert tied.model.lm_head.weight is tied.model.tok_emb.weight
    assert unique_params(base) - unique_params(tied.model) == V * D
    assert unique_params(tied.model) == count_params(CI.replace(tie_embeddings=True))
    assert all(math.isfinite(x) for x in losses(tied))


def test_sharing_all_layers_leaves_one_block(tmp_path: Path) -> None:
    base = session(tmp_path, [])
    shared = session(tmp_path, ["cross_layer_sharing"])
    blocks = shared.model.blocks
    assert len(blocks) == L  # depth unchanged
    assert all(b.attn is blocks[0].attn and b.mlp is blocks[0].mlp for b in blocks)
    assert unique_params(shared.model) == unique_params(base.model) - (L - 1) * BLOCK
    # Layer 0 runs the baseline's block 0 (same seed, same init); later layers differ, so must the loss.
    first, base_first = shared.step(0), base.step(0)
    assert math.isfinite(first) and first != base_first


def test_sharing_groups_of_two(tmp_path: Path) -> None:
    s = session(tmp_path, [{"cross_layer_sharing": {"share_every": 2}}])
    b = s.model.blocks
    assert b[1].attn is b[0].attn and b[3].mlp is b[2].mlp and b[2].attn is not b[0].attn
    assert unique_params(s.model) == count_params(CI) - (L // 2) * BLOCK
    # The optimizer holds one state per unique tensor; the shared block's weights still train.
    w0 = b[0].attn.q_proj.weight.detach().clone()
    assert all(math.isfinite(x) for x in losses(s))
    assert not torch.equal(w0, b[1].attn.q_proj.weight)
    assert sum(st["exp_avg"].numel() for st in s.optimizer.state.values()) == unique_params(s.model)


@pytest.mark.parametrize("scope", ["block", "mlp"])
def test_sharing_with_checkpointing_is_exact(tmp_path: Path, scope: str) -> None:
    plain = losses(session(tmp_path, ["cross_layer_sharing"]))
    s = session(tmp_path, ["cross_layer_sharing", {"activation_checkpointing": {"scope": scope}}])
    # Each position is wrapped once around the shared modules: no wrapper inside a wrapper.
    wrapped = [b if scope == "block" else b.mlp for b in s.model.blocks]
    assert all(type(w).__name__ == "CheckpointedBlock" for w in wrapped)
    assert all(type(w.inner).__name__ != "CheckpointedBlock" for w in wrapped)
    assert unique_params(s.model) == count_params(CI) - (L - 1) * BLOCK
    got = losses(s)
    assert all(math.isfinite(x) for x in got)
    assert got == plain  # checkpointing is exact, shared or not


# ---- adapters -------------------------------------------------------------------------------------


def test_shared_adapter_trains_one_adapter_and_nothing_else(tmp_path: Path) -> None:
    base_first = session(tmp_path, []).step(0)
    s = session(tmp_path, [{"shared_adapter": {"bottleneck": 16}}])
    adapters = {id(b.mlp.adapter) for b in s.model.blocks}
    assert len(adapters) == 1
    assert trainable(s.model) == BOTTLENECK
    assert unique_params(s.model) == count_params(CI) + BOTTLENECK
    before = frozen_snapshot(s.model)
    up0 = s.model.blocks[0].mlp.adapter.up_weight.detach().clone()
    got = losses(s)
    assert got[0] == base_first  # up projection starts at zero: the adapter is the identity
    assert all(math.isfinite(x) for x in got)
    assert_unchanged(s.model, before)
    assert not torch.equal(up0, s.model.blocks[0].mlp.adapter.up_weight)


def test_bottleneck_adapter_per_layer(tmp_path: Path) -> None:
    base_first = session(tmp_path, []).step(0)
    s = session(tmp_path, [{"bottleneck_adapter": {"bottleneck": 16}}])
    assert trainable(s.model) == 2 * L * BOTTLENECK
    before = frozen_snapshot(s.model)
    got = losses(s)
    assert got[0] == base_first
    assert_unchanged(s.model, before)


def test_per_layer_adapters_over_a_shared_block(tmp_path: Path) -> None:
    s = session(tmp_path, ["cross_layer_sharing", {"bottleneck_adapter": {"bottleneck": 16}}])
    b = s.model.blocks
    assert b[0].attn.sublayer is b[3].attn.sublayer and b[0].attn.adapter is not b[3].attn.adapter
    assert trainable(s.model) == 2 * L * BOTTLENECK
    assert unique_params(s.model) == count_params(CI) - (L - 1) * BLOCK + 2 * L * BOTTLENECK
    assert all(math.isfinite(x) for x in losses(s))


def test_adapter_also_train_layer_norms(tmp_path: Path) -> None:
    s = session(tmp_path, [{"shared_adapter": {"bottleneck": 16, "also_train": ["layer_norms"]}}])
    norms = (2 * L + 1) * 2 * D  # two per block and the final one, weight + bias
    assert trainable(s.model) == BOTTLENECK + norms


# ---- LoRA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "per_layer"),
    [
        (["q_proj", "v_proj"], 2 * 8 * (D + D)),
        (["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], 4 * 8 * (D + D) + 2 * 8 * (D + F)),
    ],
)
def test_lora_trainable_count_is_exact(tmp_path: Path, targets: list[str], per_layer: int) -> None:
    s = session(tmp_path, [{"lora": {"rank": 8, "targets": targets}}])
    assert trainable(s.model) == L * per_layer
    assert not s.model.lm_head.weight.requires_grad and not s.model.tok_emb.weight.requires_grad
    assert unique_params(s.model) == count_params(CI) + L * per_layer


def test_lora_starts_at_the_baseline_keeps_base_frozen_and_state_small(tmp_path: Path) -> None:
    base_first = session(tmp_path, []).step(0)
    s = session(tmp_path, [{"lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "fc2"]}}])
    before = frozen_snapshot(s.model)
    b0 = s.model.blocks[0].mlp.fc2.lora_B.detach().clone()
    assert torch.count_nonzero(b0) == 0
    got = losses(s)
    assert got[0] == base_first  # B = 0: W = W0 exactly
    assert all(math.isfinite(x) for x in got)
    assert_unchanged(s.model, before)
    assert not torch.equal(b0, s.model.blocks[0].mlp.fc2.lora_B)
    # AdamW keeps exp_avg and exp_avg_sq (4 bytes each) for exactly the trainable tensors.
    state = s.optimizer.state
    assert {id(p) for p in state} == {id(p) for p in s.model.parameters() if p.requires_grad}
    moments = sum(t.numel() * t.element_size() for st in state.values() for k, t in st.items() if k != "step")
    assert moments == 8 * trainable(s.model)


def test_lora_also_train_lm_head(tmp_path: Path) -> None:
    s = session(tmp_path, [{"lora": {"also_train": ["lm_head"]}}])
    assert trainable(s.model) == L * 2 * 8 * (D + D) + V * D


def test_lora_infer_equals_baseline(tmp_path: Path) -> None:
    base = session(tmp_path, [], workload="infer").step(0)
    assert session(tmp_path, ["lora"], workload="infer").step(0) == base


def test_lora_and_both_adapters_compose(tmp_path: Path) -> None:
    techs = ["lora", {"bottleneck_adapter": {"bottleneck": 16}}, {"shared_adapter": {"bottleneck": 16}}]
    s = session(tmp_path, techs)
    # The adapters' freeze (applied after LoRA's) kept LoRA's weights trainable, and vice versa.
    assert trainable(s.model) == L * 2 * 8 * (D + D) + 2 * L * BOTTLENECK + BOTTLENECK
    before = frozen_snapshot(s.model)
    assert all(math.isfinite(x) for x in losses(s))
    assert_unchanged(s.model, before)


def test_lora_over_shared_block_is_shared(tmp_path: Path) -> None:
    s = session(tmp_path, ["cross_layer_sharing", "lora"])
    assert trainable(s.model) == 2 * 8 * (D + D)  # one LoRA pair per unique matrix
    assert s.model.blocks[3].attn.q_proj is s.model.blocks[0].attn.q_proj


def test_lora_unknown_target_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="targets"):
        session(tmp_path, [{"lora": {"targets": ["lm_head"]}}])


def test_peft_matches_manual_lora(tmp_path: Path) -> None:
    """peft's LoRA layers and ours, given the same A, compute the same losses step by step."""
    pytest.importorskip("peft")
    opts = {"rank": 4, "alpha": 8, "targets": ["q_proj", "fc1"]}
    manual = session(tmp_path, [{"lora": opts}])
    peft = session(tmp_path, [{"lora": {**opts, "impl": "peft"}}])
    assert trainable(peft.model) == trainable(manual.model) == L * 4 * ((D + D) + (D + F))
    with torch.no_grad():
        for name, module in manual.model.named_modules():
            if isinstance(module, _adapter_modules.LoRALinear):
                peft.model.get_submodule(name).lora_A["default"].weight.copy_(module.lora_A)
    assert losses(peft) == pytest.approx(losses(manual), rel=1e-5)


def test_tying_an_already_tied_model_says_it_changed_nothing(write_suite) -> None:
    from harness.runner.session import open_session
    from harness.suite.load import load_suite

    suite = load_suite(
        write_suite(
            """\
            version: 1
            defaults: {reference_steps: 0, data: random}
            models:
              gpt2: {hf: gpt2, n_layer: 1, n_embd: 32, n_head: 2, vocab_size: 256, n_positions: 64}
              ci: {size: ci}
            workloads: {w: {kind: infer, batch_size: 1, seq_len: 8}}
            techniques: {tie: [tied_embeddings]}
            matrix: {model: [gpt2, ci], workload: [w], techniques: [tie]}
            """
        )
    )
    notes = {}
    for case in suite.cases:
        session = open_session(case)
        metrics = {k: v for t in session.techniques for k, v in t.metrics(session.model).items()}
        notes[case.model_name] = metrics.get("technique_note")
    assert notes == {
        "gpt2": "tied_embeddings: the model's embeddings and head were tied already",
        "ci": None,
    }
