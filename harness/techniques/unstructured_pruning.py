from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from harness.techniques import _util
from harness.techniques.base import Context, Environment, Phase, Technique, TechniqueConfig

if TYPE_CHECKING:
    import torch
    from torch import nn


class UnstructuredPruning(Technique):
    """Magnitude (L1) pruning of the Linear weights: the `sparsity` fraction with the smallest |w| is zeroed.

    Saves: nothing in dense storage (zeros take as many bytes as any value). `storage` makes that explicit:
      masks  - torch.nn.utils.prune: weight_orig (parameter) + weight_mask (buffer, same dtype) + the
               recomputed weight: the pruned layers' weights take about 3x their dense bytes (memory UP).
      dense  - prune, then prune.remove(): zeros in the dense weight, same bytes. In training a gradient
               hook zeroes the gradient where the weight is 0, so AdamW keeps the pruned weights at 0.
      sparse - CSR (values + column indices + row pointers) for each layer where that is smaller than
               dense: nnz*(e + i) + (rows + 1)*i < rows*cols*e, i.e. density below about e/(e + i)
               (fp32 with int32 indices: 50 %; with int64: 33 %). Inference only.
    Costs: quality (pruned at initialisation here, without fine-tuning); sparse matmuls are much slower
    than dense ones at moderate sparsity (about 10x at 50 % on CPU).
    """

    name: ClassVar[str] = "unstructured_pruning"
    phase: ClassVar[Phase] = Phase.STRUCTURE

    class Config(TechniqueConfig):
        sparsity: float = Field(default=0.5, ge=0.0, lt=1.0)
        """Fraction of the targeted weights zeroed (smallest |w| first)."""
        scope: Literal["global", "per_layer"] = "per_layer"
        """per_layer: each layer loses `sparsity` of its weights; global: one threshold over all layers."""
        storage: Literal["masks", "dense", "sparse"] = "dense"
        """How the pruned weights are kept (see the class docstring): masks raise memory, dense keeps it."""
        sparse_index_dtype: Literal["int32", "int64"] = "int32"
        """Index type of the CSR arrays (storage: sparse); int32 moves the break-even density to e/(e+4)."""
        include_lm_head: bool = True
        """Also prune the (untied) LM head; a tied head is the embedding and is never pruned."""

    config: Config

    def conflicts_with(self, other: Technique) -> str | None:
        """Conflicts that depend on `storage`: quantizers replace the Linear layers (dropping masks or
        finding CSR buffers); CSR matmuls have no bf16 CPU kernel."""
        if other.quantizes and self.config.storage != "dense":
            return (
                f"storage: {self.config.storage} keeps the pruned weights outside a plain Linear weight; "
                "a quantizer replaces the layer and would drop them: use storage: dense"
            )
        if other.name == "pure_bf16" and self.config.storage == "sparse":
            return "storage: sparse: torch's CPU CSR matmul has no bfloat16 kernel (CUDA's is untested here)"
        return self.conflicts.get(other.name)

    def unsupported_reason(self, env: Environment, ctx: Context) -> str | None:
        if self.config.storage != "sparse":
            return None
        if ctx.workload != "infer":
            return (
                "storage: sparse is inference-only: the weight gradient and AdamW state would be dense "
                "(as large as the dense weight); train with storage: dense, which keeps the zeros fixed"
            )
        if ctx.device == "cpu" and ctx.dtype != "float32":
            return f"torch's CPU CSR matmul (MKL) has no {ctx.dtype} kernel; use dtype float32"
        return None

    def transform_model(self, model: nn.Module, ctx: Context) -> nn.Module:
        targets = _util.target_linears(model, self.config.include_lm_head)
        if self.config.storage == "masks":
            self._prune_with_masks(targets)
            return model
        weights = [m.get_parameter("weight") for _, m in targets]
        # In place, not through prune + prune.remove: those build weight_orig + mask + weight for every
        # layer at once, a build-time peak of about 3x the weights for a result that takes 1x.
        groups = [weights] if self.config.scope == "global" else [[w] for w in weights]
        for group in groups:
            zero_smallest(group, self.config.sparsity)
        if self.config.storage == "sparse":
            self._to_sparse(model, targets)
        elif ctx.workload != "infer":
            for w in weights:
                _freeze_zeros(w)
        return model

    def _prune_with_masks(self, targets: list[tuple[str, nn.Module]]) -> None:
        from torch.nn.utils import prune

        amount = self.config.sparsity
        if self.config.scope == "global":
            params = [(m, "weight") for _, m in targets]
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        else:
            for _, module in targets:
                prune.l1_unstructured(module, "weight", amount=amount)

    def _to_sparse(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> None:
        import torch
        from torch import nn

        from harness.techniques._sparse_linear import SparseLinear

        index_dtype = getattr(torch, self.config.sparse_index_dtype)
        index_bytes = torch.empty((), dtype=index_dtype).element_size()
        for name, module in targets:
            assert isinstance(module, nn.Linear)
            if _csr_bytes(module.weight, index_bytes) < _util.tensor_bytes(module.weight):
                _util.set_submodule(model, name, SparseLinear(module, index_dtype))

    def metrics(self, model: nn.Module) -> dict[str, float | int]:
        """Achieved sparsity, bytes the pruned weights hold in their storage, and the dense reference."""
        from harness.techniques._sparse_linear import SparseLinear

        targets = _util.target_linears(model, self.config.include_lm_head)
        sparse = [(n, m) for n, m in model.named_modules() if isinstance(m, SparseLinear)]
        layers = targets + sparse
        zeros = sum(_zero_count(m) for _, m in layers)
        total = sum(_util.weight_count(m) for _, m in layers)
        if not total:
            return {}  # a later quantizer replaced the layers; its own metrics describe them
        return {
            "sparsity_fraction": zeros / total,
            "pruned_weight_count": zeros,
            "targeted_weight_count": total,
            "weight_storage_bytes": sum(_weight_storage(m) for _, m in layers),
            "dense_weight_bytes": _util.dense_weight_bytes((m for _, m in layers), model),
            "sparse_layer_count": len(sparse),
        }


def zero_smallest(weights: list[torch.Tensor], amount: float) -> None:
    """Zero, in place, the round(amount * n) entries of smallest |w| over all `weights` together: the
    same count as torch's L1Unstructured. Ties at the threshold are broken by position, so the count is
    exact even in bf16, where many weights share a value."""
    import torch

    with torch.no_grad():
        k = round(amount * sum(w.numel() for w in weights))
        if k == 0:
            return
        threshold = torch.cat([w.detach().abs().flatten() for w in weights]).kthvalue(k).values
        below = sum(int((w.abs() < threshold).sum()) for w in weights)
        ties_left = k - below  # how many entries equal to the threshold still have to go
        for w in weights:
            ties = w.abs() == threshold
            if ties_left < int(ties.sum()):
                keep_ties = ties.flatten().cumsum(0) > ties_left  # ties past the first ties_left stay
                ties.view(-1)[keep_ties] = False
            ties_left -= int(ties.sum())
            w.masked_fill_((w.abs() < threshold) | ties, 0)


def _csr_bytes(weight: torch.Tensor, index_bytes: int) -> int:
    import torch

    nnz = int(torch.count_nonzero(weight))
    return nnz * (int(weight.element_size()) + index_bytes) + (int(weight.shape[0]) + 1) * index_bytes


def _zero_count(m: nn.Module) -> int:
    import torch

    from harness.techniques._sparse_linear import SparseLinear

    if isinstance(m, SparseLinear):
        return _util.weight_count(m) - int(torch.count_nonzero(m.get_buffer("values")))
    return int((_util.attr_tensor(m, "weight") == 0).sum())


def _weight_storage(m: nn.Module) -> int:
    """Bytes held for one layer's weight: CSR arrays, or weight_orig + weight_mask + the computed
    weight under masks, or the dense weight."""
    from harness.techniques._sparse_linear import SparseLinear

    if isinstance(m, SparseLinear):
        return sum(_util.tensor_bytes(m.get_buffer(b)) for b in ("crow_indices", "col_indices", "values"))
    held = [_util.attr_tensor(m, "weight")]
    if hasattr(m, "weight_orig"):
        held += [m.get_parameter("weight_orig"), m.get_buffer("weight_mask")]
    return sum(_util.tensor_bytes(t) for t in held)


def _freeze_zeros(weight: torch.Tensor) -> None:
    """Zero the gradient where the weight is 0: AdamW then never moves a pruned weight (its moments
    stay 0 and decoupled weight decay scales 0 to 0). No mask is stored; `weight == 0` is recomputed."""
    weight.register_hook(lambda grad: grad.masked_fill(weight == 0, 0))
