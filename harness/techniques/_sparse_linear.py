# mypy: disallow-subclassing-any=False
"""The CSR Linear layer of unstructured_pruning (storage: sparse), apart from the technique so that the
technique module imports without torch."""

from __future__ import annotations

import torch
from torch import nn


class SparseLinear(nn.Module):
    """A Linear whose weight is kept in CSR form: values, column indices and row pointers.

    The three arrays are plain buffers (not one sparse tensor) so that any byte count over
    `model.buffers()` is exact. Inference only: see UnstructuredPruning.
    """

    def __init__(self, linear: nn.Linear, index_dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        csr = linear.weight.detach().to_sparse_csr()
        self.register_buffer("crow_indices", csr.crow_indices().to(index_dtype))
        self.register_buffer("col_indices", csr.col_indices().to(index_dtype))
        self.register_buffer("values", csr.values().clone())
        self.bias = linear.bias

    def weight_csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.get_buffer("crow_indices"),
            self.get_buffer("col_indices"),
            self.get_buffer("values"),
            size=(self.out_features, self.in_features),
            check_invariants=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # (N, in)
        y = (self.weight_csr() @ flat.T).T  # sparse (out, in) @ dense (in, N) -> (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)
