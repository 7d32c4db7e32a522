from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.techniques.base import Context, Phase, Technique

if TYPE_CHECKING:
    from harness.analysis.shape import Shape
    from harness.models.kv_cache import CacheSpec


class StaticCache(Technique):
    """A KV cache allocated once for the whole generation (prompt_len + new_tokens - 1 tokens, or the
    window) and written in place, instead of one grown by concatenation per token (transformers'
    StaticCache against DynamicCache). Same as the workload option `cache: static`.

    Saves: the per-token reallocation: a dynamic cache concatenates, so for a moment each layer holds the
    old and the new K/V (a transient of one layer's cache per step), and the allocator sees a new size
    every token; a static one has fixed addresses (what CUDA graphs and torch.compile need).
    Costs: the full length's memory from the first token: the cache's peak is reached at the prefill.
    Exact: the same keys and values, the same tokens.
    """

    name: ClassVar[str] = "static_cache"
    phase: ClassVar[Phase] = Phase.STEP
    workloads: ClassVar[frozenset[str] | None] = frozenset({"generate"})
    exact: ClassVar[bool] = True

    def adjust_prediction(self, shape: Shape) -> str | None:
        shape.kv_static = True  # the same bytes once full, held from the prefill on
        return None

    def configure_cache(self, spec: CacheSpec, ctx: Context) -> CacheSpec:
        return spec.with_(storage="static")
