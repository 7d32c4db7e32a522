"""Token batches and starting weights for a case. Deterministic from the seed, so every technique of a
model sees the same data and the same weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from harness.case import CaseSpec
    from harness.corpus import Corpus
    from harness.models.source import ModelSource

Batch = tuple["torch.Tensor", "torch.Tensor"]  # (inputs, targets), each (B, T)


def random_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int) -> list[Batch]:
    """`n` (inputs, targets) pairs of uniform random tokens; targets are inputs shifted by one.

    Generated up front so no step's timing includes data generation.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seq = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=gen)
        out.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    return out


def corpus_for(case: CaseSpec) -> Corpus:
    from harness.corpus import load_corpus

    return load_corpus(text_file=case.corpus_text_file) if case.corpus_text_file else load_corpus()


def case_batches(
    case: CaseSpec, n: int, vocab_size: int, split: str = "train", device: str = "cpu"
) -> list[Batch]:
    """The case's `n` batches: corpus windows (train or held-out split) or random tokens."""
    if case.data == "corpus":
        from harness.corpus import corpus_batches

        batches = corpus_batches(n, case.batch_size, case.seq_len, split, case.seed, corpus_for(case))
    else:
        seed = case.seed if split == "train" else case.seed + 10_007  # held-out: other random tokens
        batches = random_batches(n, case.batch_size, case.seq_len, vocab_size, seed)
    return [(x.to(device), y.to(device)) for x, y in batches]


def reference_weights(
    case: CaseSpec, cfg: ModelSource, verify: bool = True, mapped: bool = True
) -> dict[str, torch.Tensor] | None:
    """Trained starting weights for the case (cached; see harness.corpus.reference_model), or None.
    The case's own model passes `mapped=False`: read into fresh memory, as a user would load them."""
    if not case.uses_reference_weights:
        return None
    from harness.corpus import reference_model

    return reference_model(
        cfg, corpus_for(case), case.reference_steps, case.seed, verify=verify, mapped=mapped
    )
