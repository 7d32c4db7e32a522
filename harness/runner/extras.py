"""Untimed figures the case process adds after its measured steps (the `extras` phase).

They run after the `measured` mark, so their cost (an instrumented step under MemTracker, a second
model for the quality comparison) never touches the timed steps or the case's memory peak. Each part
that cannot be computed for a case says why instead of failing the case.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.case import CaseSpec
from harness.data import case_batches, reference_weights
from harness.models.build import build_module
from harness.models.source import ModelSource, config_of
from harness.workloads.base import Session


def extras(case: CaseSpec, session: Session) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if case.quality:
        out.update(_guarded("quality_unavailable_reason", lambda: quality(case, session)))
    if case.breakdown:
        out.update(_guarded("breakdown_unavailable_reason", lambda: {"breakdown": breakdown(session)}))
    out.update(_guarded("prediction_unavailable_reason", lambda: prediction(case, out.get("breakdown"))))
    return out


def _guarded(reason_key: str, compute: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = compute()
        return result
    except Exception as e:  # an extra that does not apply to this case is a stated gap, not a failure
        return {reason_key: f"{type(e).__name__}: {e}"[:300]}


def quality(case: CaseSpec, session: Session) -> dict[str, Any]:
    """Held-out loss and perplexity of the case's model as it stands after the measured steps, with
    each batch's loss (paired with the baseline's batch by batch, harness/analysis/pairing.py). A
    served model (infer, generate) is also compared with the fp32 model of the same weights here: KL,
    top-1 agreement and the paired loss difference, each with a bootstrap interval over batches."""
    from harness.analysis.pairing import paired_difference
    from harness.analysis.quality import compare_models, heldout_loss

    own = getattr(session, "quality_metrics", None)
    if own is not None:  # a workload with its own protocol (generate: teacher-forced decoding)
        result: dict[str, Any] = own()
        return result
    cfg = config_of(case.model)
    device = next(session.model.parameters()).device
    batches = case_batches(case, case.heldout_batches, cfg.vocab_size, "heldout", str(device))
    model = _InPlanContext(session)  # the case's step contexts (autocast) apply to its model only
    out: dict[str, Any] = heldout_loss(model, batches)
    out["heldout_draw"] = heldout_draw(case)
    out["quality_start_weights"] = start_weights(case)
    if not session.serving:  # every technique of a group fine-tunes on the same seeded batches
        out["quality_finetune_step_count"] = case.warmup_steps + case.measured_steps
    if session.serving:
        compared = compare_models(model, _fp32_baseline(case, cfg, device), batches)
        reference = compared.pop("reference_heldout_loss_per_batch_nats")
        out.update(compared)
        if case.techniques:
            out.update(paired_difference(out["heldout_loss_per_batch_nats"], reference))
            out["quality_baseline"] = "fp32 model of the same weights, same held-out batches"
    return out


def heldout_draw(case: CaseSpec) -> str:
    """What identifies the held-out batches: a case and its baseline are paired only on the same draw."""
    return (
        f"{case.data} heldout, seed {case.seed}, {case.heldout_batches} batches of "
        f"{case.batch_size} x {case.seq_len}"
    )


def start_weights(case: CaseSpec) -> str:
    if case.uses_reference_weights:
        return f"reference weights trained {case.reference_steps} steps on the corpus (seed {case.seed})"
    return f"random init (seed {case.seed}): quality figures are noise"


class _InPlanContext(torch.nn.Module):
    """The session's model, run inside the session's step contexts (e.g. autocast), as its steps are."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.inner = session.model
        self.plan = getattr(session, "plan", None)

    def forward(self, x: torch.Tensor) -> Any:
        if self.plan is None:
            return self.inner(x)
        with self.plan.context():
            return self.inner(x)


def _fp32_baseline(case: CaseSpec, cfg: ModelSource, device: torch.device) -> torch.nn.Module:
    """The same starting weights with no technique, in fp32: what the case's logits are judged against."""
    weights = reference_weights(case, cfg)
    torch.manual_seed(case.seed)
    model = build_module(cfg)
    if weights is not None:
        model.load_state_dict(weights)
    return model.to(device).eval()


def breakdown(session: Session) -> dict[str, int]:
    from harness.analysis.breakdown import breakdown_step

    return breakdown_step(session)


# Measured over predicted tensor peak outside these bounds: the prediction is withheld (null, with why).
RATIO_BOUNDS = (0.2, 5.0)


def prediction(case: CaseSpec, measured: dict[str, int] | None) -> dict[str, Any]:
    from harness.analysis.predict import predict

    predicted = predict(case)
    if "prediction_unavailable_reason" in predicted:
        return {"prediction_unavailable_reason": predicted["prediction_unavailable_reason"]}
    out: dict[str, Any] = {"predicted": predicted}
    if measured and predicted.get("tensor_peak_bytes"):
        ratio = measured["tensor_peak_bytes"] / predicted["tensor_peak_bytes"]
        if not RATIO_BOUNDS[0] < ratio < RATIO_BOUNDS[1]:
            # A model off by more than 5x describes another program: its figures are withheld.
            return {
                "prediction_unavailable_reason": f"measured/predicted tensor peak {ratio:.3g} is outside "
                f"{RATIO_BOUNDS}: the analytic model does not describe this case"
            }
        out["tensor_peak_measured_over_predicted"] = ratio
    return out
