"""The stdlib byte corpus, the cached reference model, and the quality metrics on exact examples."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness import corpus as corpus_mod
from harness.analysis.quality import compare_models, heldout_loss, kl_divergence, perplexity, top1_agreement
from harness.corpus import corpus_batches, load_corpus, reference_model, reference_path, stdlib_sources
from harness.models.config import SIZES
from harness.models.transformer import Transformer

CAP = 256 * 1024  # a small cap keeps the tests fast


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    corpus_mod._load_corpus.cache_clear()  # the per-process memo; these tests are about the disk cache
    return tmp_path


def test_corpus_is_the_sorted_stdlib_up_to_the_cap_with_every_tenth_chunk_held_out(cache):
    sources = stdlib_sources(CAP)
    c = load_corpus(CAP)
    assert [rel.split("/") for rel, _ in sources] == sorted(rel.split("/") for rel, _ in sources)
    text = b"".join(p.read_bytes() for _, p in sources)
    assert c.train.numel() + c.heldout.numel() == len(text) >= CAP
    chunk = corpus_mod.CHUNK_BYTES
    assert bytes(c.heldout.numpy())[:chunk] == text[9 * chunk : 10 * chunk]
    assert bytes(c.train.numpy())[: 9 * chunk] == text[: 9 * chunk]
    assert c.heldout.numel() == pytest.approx(len(text) / 10, rel=0.1)
    assert c.source.startswith("stdlib:")


def test_corpus_cache_is_reused_and_a_corrupt_file_is_rebuilt(cache):
    first = load_corpus(CAP)
    (path,) = (cache / "corpus").iterdir()
    again = load_corpus(CAP)
    assert again.sha256 == first.sha256 and torch.equal(again.train, first.train)
    path.write_bytes(b"garbage")
    corpus_mod._load_corpus.cache_clear()  # a new process would read the file again
    rebuilt = load_corpus(CAP)
    assert rebuilt.sha256 == first.sha256
    assert torch.load(path, weights_only=True)["sha256"] == first.sha256


def test_a_user_text_file_is_split_the_same_way(tmp_path):
    text = tmp_path / "t.txt"
    data = bytes(range(256)) * 4 * 21  # 21 KiB: chunks 0, 1 (8 KiB) and 2 (5 KiB) all train
    text.write_bytes(data * 4)  # 84 KiB: chunk 9 (bytes 72-80 KiB) is held out
    c = load_corpus(text_file=text)
    assert c.heldout.numel() == corpus_mod.CHUNK_BYTES
    assert bytes(c.heldout.numpy()) == (data * 4)[9 * 8192 : 10 * 8192]
    assert c.source == f"file:{text}"


def test_batches_are_deterministic_shifted_byte_windows(cache):
    c = load_corpus(CAP)
    a = corpus_batches(3, 4, 32, "heldout", seed=1, corpus=c)
    b = corpus_batches(3, 4, 32, "heldout", seed=1, corpus=c)
    other = corpus_batches(3, 4, 32, "heldout", seed=2, corpus=c)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], other[0][0])
    x, y = a[0]
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < 256
    with pytest.raises(ValueError, match="split"):
        corpus_batches(1, 1, 8, "test", corpus=c)


def test_reference_model_is_cached_by_hash_and_rebuilt_when_corrupt(cache, monkeypatch):
    cfg = SIZES["ci"].replace(n_layers=1)
    c = load_corpus(CAP)
    calls: list[int] = []
    real = corpus_mod.train_reference

    def counting_train(*a):
        calls.append(a[2])
        return real(*a)

    monkeypatch.setattr(corpus_mod, "train_reference", counting_train)
    first = reference_model(cfg, c, steps=2, seed=0)
    again = reference_model(cfg, c, steps=2, seed=0)
    assert calls == [2]
    assert all(torch.equal(first[k], again[k]) for k in first)
    reference_model(cfg, c, steps=3, seed=0)  # a different key: trained, not loaded
    assert calls == [2, 3]
    path = reference_path(corpus_mod.reference_key(cfg, c, 2, 0))
    path.write_bytes(path.read_bytes()[:100])  # truncated: must be rebuilt, not loaded
    rebuilt = reference_model(cfg, c, steps=2, seed=0)
    assert calls == [2, 3, 2]
    assert all(torch.equal(first[k], rebuilt[k]) for k in first)  # training is deterministic


def test_training_on_the_corpus_lowers_heldout_loss_below_uniform(cache):
    cfg = SIZES["ci"].replace(n_layers=1)
    c = load_corpus(CAP)
    batches = corpus_batches(2, 4, 64, "heldout", seed=0, corpus=c)
    model = Transformer(cfg)
    model.load_state_dict(reference_model(cfg, c, steps=30, seed=0))
    trained = heldout_loss(model, batches)
    assert trained["heldout_loss_nats"] < math.log(256) - 1.0  # bytes of Python source are predictable
    assert trained["perplexity"] == pytest.approx(math.exp(trained["heldout_loss_nats"]))
    same = compare_models(model, model, batches)
    assert same["kl_divergence_nats"] == pytest.approx(0.0, abs=1e-6)
    assert same["top1_agreement_fraction"] == 1.0


class Uniform(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, 256) * self.w


def test_uniform_logits_give_loss_log_v_and_perplexity_v():
    out = heldout_loss(Uniform(), [(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))])
    assert out["heldout_loss_nats"] == pytest.approx(math.log(256))
    assert out["perplexity"] == pytest.approx(256.0)
    assert perplexity(0.0) == {"perplexity": 1.0}


def test_kl_and_top1_on_exact_examples():
    ref = torch.tensor([[0.0, 0.0]])  # p_ref = (1/2, 1/2)
    case = torch.tensor([[math.log(3.0), 0.0]])  # p_case = (3/4, 1/4)
    # KL(ref || case) = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3)
    assert kl_divergence(case, ref)["kl_divergence_nats"] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    assert kl_divergence(ref, ref) == {"kl_divergence_nats": 0.0}
    a = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0]]])
    b = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 9.0]]])
    assert top1_agreement(a, b)["top1_agreement_fraction"] == pytest.approx(2 / 3)
