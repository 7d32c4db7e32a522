"""Where the tensor bytes of one step go, by category, from a separate untimed instrumented step.

`torch.distributed._tools.mem_tracker.MemTracker` sees every tensor storage created through the
dispatcher (CPU and CUDA alike) and files it under parameter, buffer, gradient, activation (made in
forward, or recomputed by checkpointing), temporary (made in backward), optimizer state, or other.
It costs about x1.3 step time and extra host memory (docs/measurement.md), so it never runs in a timed or
memory-measured step: the case process calls it after the measured steps.

Steps that call a top-level module more than once (gradient_accumulation runs the model's forward
once per micro-batch; chunked_cross_entropy runs the LM head once per chunk, from outside the model's
forward) make the stock MemTracker raise "does not support memory tracking for multiple iterative
calls": it takes a second forward of a root module for the next training iteration. `StepTracker`
accepts such a call and tracks it as MemTracker already tracks a submodule called twice in one
forward. The category accounting (the dispatch mode: every storage, filed by forward / backward /
optimizer region) never depended on that check; only the per-module statistics did, and they stay
correct: a repeated call appends snapshots, and a module's peak is the highest over all its calls.
`test_breakdown.py` checks the result against torch.profiler's raw memory records for both techniques.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
from torch.distributed._tools.mem_tracker import MemTracker, _ModState

from harness.workloads.base import Session

# MemTracker's category labels -> our metric names (without the `_bytes` suffix).
CATEGORIES: dict[str, str] = {
    "Parameter": "parameters",
    "Buffer": "buffers",
    "Gradient": "gradients",
    "Optstate": "optimizer_state",
    "Activation": "activations",
    "Temp": "temporaries",
    "Other": "other",
}


class StepTracker(MemTracker):
    """MemTracker that accepts a root module's repeated forward within one tracked step."""

    def _pre_fw_hook(self, module: torch.nn.Module, inputs: Any) -> None:
        if module not in self.memory_tracking or self._mod_tracker.is_bw:
            # First call, or a checkpointed module's recompute in backward: MemTracker's own cases.
            super()._pre_fw_hook(module, inputs)
            return
        # A repeated forward call (MemTracker's "Case 3"), without its refusal of root modules: record
        # the call's inputs and open a new forward peak window for the module.
        stats = self.memory_tracking[module]
        stats.input_mem = self._track_inputs_or_outputs(inputs)
        snapshot = self.get_tracker_snapshot()
        stats.local_peak = {dev: dev_snap["Total"] for dev, dev_snap in snapshot.items()}
        stats.snapshots.setdefault(_ModState.PEAK_FW, []).append(snapshot)
        stats.snapshots.setdefault(_ModState.PRE_FW, []).append(deepcopy(snapshot))

    def _track(self, reftype: Any, t: torch.Tensor) -> None:
        # A sparse tensor has no single storage (MemTracker asks for one and raises): it is counted by
        # its real buffers. The CSR weight a SparseLinear builds in forward wraps its own index and
        # value buffers, already counted as buffers; a CSR tensor made in the step counts its arrays.
        if t.layout == torch.sparse_csr:
            for part in (t.crow_indices(), t.col_indices(), t.values()):
                super()._track(reftype, part)
        elif t.layout == torch.sparse_coo:
            for part in (t._indices(), t._values()):
                super()._track(reftype, part)
        else:
            super()._track(reftype, t)


class _NoHook:
    """Stands in for a gradient-hook handle on a frozen parameter (see `_skip_frozen_params`)."""

    def remove(self) -> None:
        return None


def _skip_frozen_params(tracker: MemTracker, model: torch.nn.Module) -> None:
    # MemTracker registers a gradient hook on every parameter it meets, and torch refuses a hook on a
    # tensor that does not require grad (inference, frozen bases under LoRA). A handle already present
    # makes it skip the registration; the parameter's bytes are still tracked.
    for p in model.parameters():
        if not p.requires_grad:
            tracker._param_to_grad_hook_handles[p] = (_NoHook(), _NoHook())


def _has_state(optimizer: torch.optim.Optimizer | None) -> bool:
    return optimizer is not None and any(len(s) > 0 for s in optimizer.state.values())


def default_step_index(session: Session) -> int:
    """The last prepared batch: the breakdown repeats a step the measured loop already ran."""
    batches = getattr(session, "batches", None)
    return len(batches) - 1 if batches else 0


def breakdown_step(session: Session, i: int | None = None, module_depth: int = 0) -> dict[str, int]:
    """Run one extra `session.step(i)` under MemTracker and split the step's tensor peak by category.

    Returns `<category>_bytes` for parameters, buffers, gradients, optimizer_state, activations,
    temporaries and other, at the moment of the step's peak, plus `tensor_peak_bytes` (their sum).
    With `module_depth` > 0, adds `module_peak_bytes.<fqn>` for modules up to that depth: the highest
    total tensor bytes seen while the module ran, forward or backward.

    If the optimizer has no state yet (no step has run), one untracked step runs first, so the
    breakdown describes a steady-state step with optimizer state present, as the measured steps were.
    The step changes the weights (it is a real training step): call it after the measured steps.
    """
    optimizer: torch.optim.Optimizer | None = getattr(session, "optimizer", None)
    index = default_step_index(session) if i is None else i
    if optimizer is not None and not _has_state(optimizer):
        session.step(index)
    tracker = StepTracker()
    # A distill session's frozen teacher runs inside the step too: its weights count as parameters.
    teacher: torch.nn.Module | None = getattr(session, "teacher", None)
    tracked = [session.model, *([teacher] if teacher is not None else [])]
    for module in tracked:
        _skip_frozen_params(tracker, module)
    tracker.track_external(*tracked, *([optimizer] if optimizer is not None else []))
    with tracker:
        session.step(index)
        modules = _module_peaks(tracker, module_depth) if module_depth > 0 else {}
        # Module stats must be cleared between steps, or the next forward of the root raises.
        tracker.reset_mod_stats()
    return {**_peak_categories(tracker), **modules}


def _peak_categories(tracker: MemTracker) -> dict[str, int]:
    snapshot = tracker.get_tracker_snapshot("peak")
    # One device per case; the host also holds a few CPU tensors on a CUDA case (the batch indices
    # before `.to`): take the device with the highest peak, which is the one the case runs on.
    dev_snap = max(snapshot.values(), key=lambda s: s.get("Total", 0)) if snapshot else {}
    # Snapshot keys are `_MemRefType` members, a str Enum: they compare and hash equal to their labels.
    out = {f"{name}_bytes": int(dev_snap.get(label, 0)) for label, name in CATEGORIES.items()}
    out["tensor_peak_bytes"] = int(dev_snap.get("Total", 0))
    return out


def _module_peaks(tracker: MemTracker, depth: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for stats in tracker.memory_tracking.values():
        if stats.mod_fqn.count(".") + 1 > depth:
            continue
        totals = [
            dev_snap.get("Total", 0)
            for state in ("Peak-Forward", "Peak-Backward")
            for snap in stats.snapshots.get(state, [])
            for dev_snap in snap.values()
        ]
        if totals:
            out[f"module_peak_bytes.{stats.mod_fqn}"] = int(max(totals))
    return out
