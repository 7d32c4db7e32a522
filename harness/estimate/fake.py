"""Run a case's real code path on fake tensors: shapes, dtypes and storages, no bytes.

Under `FakeTensorMode` every tensor the case makes (parameters at build, batches, activations,
gradients, optimizer state) carries its size but owns no memory, so a Llama-8B training step runs in
seconds on a laptop. The same `MemTracker` step the measured breakdown uses (analysis/breakdown.py)
then files every storage under the same categories, so an estimate and a measurement of a case name
their figures identically.

Two things the fake mode cannot do on its own, bridged here (each one documented in docs/estimate.md):
- a Python scalar out of a tensor (`loss.item()`, AdamW's step counter, a grad-scaler's inf check) has
  no value on a fake tensor; `_ScalarFakeMode` answers 1 (True for a bool), which keeps every branch the real
  run takes on a finite loss past its first step.
- `Module.to()` swaps a fake parameter with its converted copy, which torch refuses while the fake
  mode's conversion memo holds a weak reference to it; `_swappable` drops that memo (a cache of
  real->fake conversions, which only saves work) just before each swap.
- transformers treats a fake tensor as a traced graph (`is_tracing`) and then never drops the causal
  mask for SDPA's `is_causal` path; the real run drops it and SDPA takes its fused kernel, which saves
  no (B, H, T, T) probabilities. `_real_mask_decisions` makes the mask code decide as in the real run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from copy import deepcopy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.workloads.base import Session


def _fake_mode() -> Any:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    class _ScalarFakeMode(FakeTensorMode):
        """Answers 1 (True for a bool) where a Python scalar is read out of a fake tensor, also from
        inside a decomposition the fake mode runs itself."""

        def dispatch(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is torch.ops.aten._local_scalar_dense.default:
                t = args[0]
                if t.dtype == torch.bool:
                    return True
                return 1.0 if t.is_floating_point() else 1
            return super().dispatch(func, types, args, kwargs or {})

    return _ScalarFakeMode(allow_non_fake_inputs=True)


@contextlib.contextmanager
def _swappable(mode: Any) -> Iterator[None]:
    import torch.utils

    original: Callable[[Any, Any], None] = torch.utils.swap_tensors

    def swap(t1: Any, t2: Any) -> None:
        mode.fake_tensor_converter.meta_converter.tensor_memo.clear()
        original(t1, t2)

    torch.utils.swap_tensors = swap
    try:
        yield
    finally:
        torch.utils.swap_tensors = original


@contextlib.contextmanager
def fake_tensors() -> Iterator[None]:
    """Everything inside makes fake CPU tensors; real tensors met on the way (a memory-mapped corpus
    window, a cached table) are converted on use."""
    mode = _fake_mode()
    with mode, _swappable(mode):
        yield


@contextlib.contextmanager
def _real_mask_decisions() -> Iterator[None]:
    """transformers' mask code asks `is_tracing(tensor)`, true for any fake tensor, and then keeps the
    full causal mask (and skips its all-ones padding shortcut) where the real run drops it. Inside, the
    question is asked without the tensor: tracing only when dynamo or jit really trace. The values the
    shortcuts then read (`padding_mask.all()`) come from `_ScalarFakeMode` (True), as an all-ones mask
    gives in the real run. Entered after the model is built, so an HF model has imported the mask
    module by then; for any other model this does nothing."""
    import sys

    module: Any = sys.modules.get("transformers.masking_utils")
    if module is None:
        yield
        return
    original = module.is_tracing
    module.is_tracing = lambda tensor=None: original()
    try:
        yield
    finally:
        module.is_tracing = original


@contextlib.contextmanager
def _allocator_rounding(enabled: bool) -> Iterator[None]:
    """MemTracker rounds each storage up to the CUDA caching allocator's 512-byte block only for storages
    on a CUDA device; an estimate for a CUDA case runs on fake CPU tensors, so the rounding is applied to
    every storage instead, exactly as the tracker applies it to a measured CUDA run."""
    if not enabled:
        yield
        return
    from torch.distributed._tools import mem_tracker

    info = mem_tracker._WeakRefInfo
    original = info._calculate_mem_consumed
    block = mem_tracker._PYTORCH_MIN_ALLOCATE

    def rounded(self: Any) -> int:
        return int(math.ceil(self.size * self.element_size / block) * block)

    info._calculate_mem_consumed = rounded
    try:
        yield
    finally:
        info._calculate_mem_consumed = original


@contextlib.contextmanager
def _cuda_autocast_fp32(enabled: bool) -> Iterator[None]:
    """CUDA autocast runs softmax, log_softmax, layer_norm and group_norm in fp32 (autocast_mode.cpp's
    CUDA fp32 lists); CPU autocast lists none of them and keeps their 16-bit input dtype. For a CUDA
    case's fake CPU run, these calls get fp32 inputs while CPU autocast is on, so their outputs (saved
    for backward) have CUDA's size."""
    if not enabled:
        yield
        return
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    fp32_ops = {
        torch.softmax,
        torch.Tensor.softmax,
        F.softmax,
        torch.log_softmax,
        torch.Tensor.log_softmax,
        F.log_softmax,
        F.layer_norm,
        torch.layer_norm,
        F.group_norm,
    }
    lower = (torch.bfloat16, torch.float16)

    def up(a: Any) -> Any:
        return a.float() if isinstance(a, torch.Tensor) and a.dtype in lower else a

    class _Fp32Policy(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
        ) -> Any:
            kwargs = kwargs or {}
            if func in fp32_ops and torch.is_autocast_enabled("cpu"):
                args, kwargs = tuple(up(a) for a in args), {k: up(v) for k, v in kwargs.items()}
            return func(*args, **kwargs)

    with _Fp32Policy():
        yield


def fake_step_breakdown(
    open_session: Callable[[], Session], warmup_steps: int, on_cuda: bool = False
) -> dict[str, Any]:
    """Open the session, run its warm-up steps, then one step under the breakdown's MemTracker, all on
    fake tensors. Returns the breakdown's `<category>_bytes` and `tensor_peak_bytes` and the model's
    parameter figures. `on_cuda` maps the run to a CUDA device's: every storage rounded up to 512
    bytes, CUDA autocast's fp32 ops (docs/estimate.md)."""
    from harness.analysis.breakdown import breakdown_step

    with fake_tensors(), _cuda_autocast_fp32(on_cuda):
        session = open_session()
        out: dict[str, Any] = _model_figures(session.model)
        with _real_mask_decisions():
            for i in range(warmup_steps):
                session.step(i)
            with _allocator_rounding(on_cuda), _fast_tracker():
                out.update(breakdown_step(session, warmup_steps))
        out.update(resident(session))
    return out


def _model_figures(model: Any) -> dict[str, int]:
    """The case process's parameter figures (runner/child.py reports the same four)."""
    params = list({id(p): p for p in model.parameters()}.values())  # shared tensors counted once
    buffers = list({id(b): b for b in model.buffers()}.values())
    return {
        "param_count": sum(p.numel() for p in params),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "trainable_param_count": sum(p.numel() for p in params if p.requires_grad),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in buffers),
    }


def _storage_bytes(tensors: Any) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[id(st)] = st.nbytes()  # views and tied weights share one storage: counted once
    return sum(seen.values())


def resident(session: Session) -> dict[str, int]:
    """What stays allocated between steps, read off the session's objects rather than the tracker: the
    parameters, the gradients of the trainable ones (all live at the optimizer step) and the optimizer
    state. These are the figures an analytic count (bytes per parameter) gives exactly."""
    import torch

    params = list({id(p): p for p in session.model.parameters()}.values())
    trainable = [p for p in params if p.requires_grad]
    optimizer = getattr(session, "optimizer", None)
    state = [
        v
        for s in (optimizer.state.values() if optimizer is not None else [])
        for v in s.values()
        if isinstance(v, torch.Tensor)
    ]
    return {
        "resident_parameters_bytes": _storage_bytes(params),
        "resident_gradients_bytes": sum(p.numel() * p.element_size() for p in trainable) if optimizer else 0,
        "resident_optimizer_state_bytes": _storage_bytes(state),
    }


def _fast_tracker_class() -> Any:
    """The breakdown's tracker with its per-op module update narrowed to the modules now running.

    MemTracker walks every module it has seen on every op to find the active ones: O(modules x ops),
    which for an 8B model's ~450 modules and ~20k ops of a checkpointed step is minutes. Looking the
    active modules up by name gives the same per-module figures in a fraction of the time.
    """
    from harness.analysis.breakdown import StepTracker

    class _ActiveModulesTracker(StepTracker):
        def _update_peak_stats(self, peak_state: Any) -> None:
            curr_snap = self._curr_mem_snap
            by_fqn = self.__dict__.get("_by_fqn")
            if by_fqn is None or len(by_fqn) != len(self.memory_tracking):
                by_fqn = {s.mod_fqn: s for s in self.memory_tracking.values()}
                self.__dict__["_by_fqn"] = by_fqn
            for fqn in self._mod_tracker.parents:
                mod_stats = by_fqn.get(fqn)
                if mod_stats is None or peak_state not in mod_stats.snapshots:
                    continue
                for dev, dev_snap in curr_snap.items():
                    if mod_stats.local_peak.get(dev, 0) < dev_snap["Total"]:
                        mod_stats.local_peak[dev] = dev_snap["Total"]
                        mod_stats.snapshots[peak_state][-1][dev] = deepcopy(dev_snap)
            for dev, dev_snap in curr_snap.items():
                if self._peak_mem.get(dev, 0) < dev_snap["Total"]:
                    self._peak_mem[dev] = dev_snap["Total"]
                    self._peak_mem_snap[dev] = deepcopy(dev_snap)

    return _ActiveModulesTracker


@contextlib.contextmanager
def _fast_tracker() -> Iterator[None]:
    from harness.analysis import breakdown

    original = breakdown.StepTracker
    breakdown.StepTracker = _fast_tracker_class()  # type: ignore[misc]
    try:
        yield
    finally:
        breakdown.StepTracker = original  # type: ignore[misc]
