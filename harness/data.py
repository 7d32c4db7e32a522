"""Token batches for a case. Deterministic from the seed, so every technique sees the same data."""

from __future__ import annotations

import torch


def random_batches(
    n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` (inputs, targets) pairs of uniform random tokens; targets are inputs shifted by one.

    Generated up front so no step's timing includes data generation.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seq = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=gen)
        out.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    return out
