"""Quality of a case's model against held-out text and against a reference model's predictions.

Memory techniques that change the math (autocast, quantization, pruning) are judged by how far the
model's next-token distribution moves: held-out loss and perplexity on real text, the KL divergence
from the reference's distribution, and how often the most likely token stays the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.detach().float().reshape(-1, logits.size(-1))  # (tokens, V), fp32


def heldout_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Mean next-token cross-entropy over every token of `batches` (nats), its perplexity, and each
    batch's own mean (`heldout_loss_per_batch_nats`): the unit the paired difference to a baseline and
    its bootstrap interval are computed over (harness/analysis/pairing.py)."""
    total, tokens, per_batch = 0.0, 0, []
    device = next(model.parameters()).device
    with torch.no_grad():
        for x, y in batches:
            logits = _flat(model(x.to(device)))
            batch_sum = float(F.cross_entropy(logits, y.to(device).reshape(-1), reduction="sum"))
            per_batch.append(batch_sum / y.numel())
            total += batch_sum
            tokens += y.numel()
    if tokens == 0:
        raise ValueError("no held-out tokens")
    loss = total / tokens
    return {"heldout_loss_nats": loss, **perplexity(loss), "heldout_loss_per_batch_nats": per_batch}


def perplexity(loss_nats: float) -> dict[str, float]:
    """exp(mean cross-entropy in nats)."""
    return {"perplexity": math.exp(loss_nats)}


def kl_divergence(logits_case: torch.Tensor, logits_ref: torch.Tensor) -> dict[str, float]:
    """Mean over tokens of KL(ref || case) = sum_v p_ref(v) (log p_ref(v) - log p_case(v)), in nats:
    the information lost when the case's distribution stands in for the reference's."""
    log_case = F.log_softmax(_flat(logits_case), dim=-1)
    log_ref = F.log_softmax(_flat(logits_ref), dim=-1)
    per_token = (log_ref.exp() * (log_ref - log_case)).sum(-1)
    return {"kl_divergence_nats": float(per_token.mean())}


def top1_agreement(logits_case: torch.Tensor, logits_ref: torch.Tensor) -> dict[str, float]:
    """Fraction of tokens whose most likely next token is the same under both models."""
    same = _flat(logits_case).argmax(-1) == _flat(logits_ref).argmax(-1)
    return {"top1_agreement_fraction": float(same.float().mean())}


def compare_models(
    model: nn.Module, reference: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, Any]:
    """Token-weighted KL(ref || case) and top-1 agreement of two models over the same batches, each
    with a bootstrap interval over batches; plus the reference's per-batch held-out loss, so the case's
    loss can be paired with it batch by batch."""
    kl, agree, ref_loss = [], [], []
    device = next(model.parameters()).device
    ref_device = next(reference.parameters()).device
    with torch.no_grad():
        for x, y in batches:
            case_logits = model(x.to(device)).to(ref_device)
            ref_logits = reference(x.to(ref_device))
            kl.append(kl_divergence(case_logits, ref_logits)["kl_divergence_nats"])
            agree.append(top1_agreement(case_logits, ref_logits)["top1_agreement_fraction"])
            ref_loss.append(float(F.cross_entropy(_flat(ref_logits), y.to(ref_device).reshape(-1))))
    if not kl:
        raise ValueError("no tokens to compare")
    # Every batch has the same shape, so the mean over batches is the token-weighted mean.
    return {"reference_heldout_loss_per_batch_nats": ref_loss, **agreement_with_intervals(kl, agree)}


def agreement_with_intervals(kl: Sequence[float], agree: Sequence[float]) -> dict[str, float]:
    """Mean KL and top-1 agreement over equal-sized samples (batches, or generated sequences), each with
    its bootstrap interval."""
    from harness.analysis.pairing import bootstrap_mean_interval

    kl_mean, kl_low, kl_high = bootstrap_mean_interval(kl)
    top1_mean, top1_low, top1_high = bootstrap_mean_interval(agree)
    return {
        "kl_divergence_nats": kl_mean,
        "kl_divergence_ci_low_nats": kl_low,
        "kl_divergence_ci_high_nats": kl_high,
        "top1_agreement_fraction": top1_mean,
        "top1_agreement_ci_low_fraction": top1_low,
        "top1_agreement_ci_high_fraction": top1_high,
    }
