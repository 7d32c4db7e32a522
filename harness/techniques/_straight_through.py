# mypy: disallow-subclassing-any=False
"""fake_quantization's formula and its straight-through parametrization, apart from the technique so that
the technique module imports without torch."""

from __future__ import annotations

import torch
from torch import nn


class StraightThrough(nn.Module):
    """Parametrization: forward sees fake_quantize(w); backward passes the gradient to w as is."""

    def __init__(self, bits: int, per_channel: bool) -> None:
        super().__init__()
        self.bits, self.per_channel = bits, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fake_quantize(w, self.bits, self.per_channel) - w).detach()


def fake_quantize(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """The seed's formula, computed in fp32 and returned in w's dtype; an all-zero row stays zero."""
    qmax = 2 ** (bits - 1) - 1
    x = w.detach().float()
    amax = x.abs().amax(dim=1, keepdim=True) if per_channel else x.abs().amax()
    s = amax / qmax
    s = torch.where(s > 0, s, torch.ones_like(s))
    return (torch.clamp(torch.round(x / s), -qmax, qmax) * s).to(w.dtype)
