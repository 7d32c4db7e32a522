"""Suite format v1: the strict shape of a suite file. Technique and workload options are validated by
their own Config classes (see load.py), so adding one edits nothing here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SUITE_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class Defaults(Strict):
    device: Literal["cpu", "cuda"] = "cpu"
    """Where cases run; cuda cases are `unsupported` on a machine without CUDA."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Parameter dtype of the model (bfloat16 = pure bf16 weights and optimizer state)."""
    seed: int = Field(default=0, ge=0, lt=2**63)
    """Seeds weights and data: every technique of a model sees the same weights and batches."""
    warmup_steps: int = Field(default=2, ge=0)
    """Steps run before measuring (allocator warm-up, lazy init); never measured."""
    measured_steps: int = Field(default=5, ge=1)
    """Steps timed one by one; their median and IQR are reported."""
    repeats: int = Field(default=1, ge=1)
    """Timing processes per case: step times of all repeats are pooled (compare wants >= 3)."""
    timeout_s: float = Field(default=900.0, gt=0, le=7 * 24 * 3600, allow_inf_nan=False)
    """Wall-clock limit of one case process; past it the process group is killed -> `timeout`."""
    threads: int = Field(default=1, ge=1)
    """torch intra-op threads in the case: pinned, because 2 threads on 2 cores swing 0.8x-3.3x."""
    memory_limit_bytes: int | None = Field(default=None, gt=0)
    """Host memory limit of a case, counted above its RSS once its imports are done (torch's ~150 MB import
    is not the case's): above it the case is killed and recorded as `oom`."""
    sample_interval_ms: float = Field(default=2.0, ge=1.0, le=20.0, allow_inf_nan=False)
    """RSS (and NVML) sampling period of the parent, for the timeline and the sampled peak."""
    timing_pass: bool = True
    """Time steps in separate processes with the system allocator (see host_malloc_mmap_threshold_bytes)."""
    host_malloc_mmap_threshold_bytes: int | None = Field(default=65536, ge=0)
    """glibc's MALLOC_MMAP_THRESHOLD_ in the memory pass, so RSS tracks live tensors (null: glibc default)."""
    data: Literal["corpus", "random"] = "corpus"
    """Tokens: `corpus` = bytes of the Python standard library's sources (offline; see harness/corpus.py),
    or of `corpus_text_file`; `random` = uniform random tokens (quality figures are then noise)."""
    corpus_text_file: str | None = None
    """A text file of your own to use as the byte-level corpus instead of the standard library."""
    reference_steps: int = Field(default=200, ge=0)
    """Every case starts from weights first trained this many steps on the corpus (inference serves
    them, training fine-tunes them), cached by a hash of (model, corpus, steps, seed); 0 = random init,
    whose quality figures are noise."""
    quality: bool = True
    """After the timed steps, evaluate held-out loss/perplexity (and KL / top-1 vs fp32 for inference)."""
    heldout_batches: int = Field(default=4, ge=1)
    """Held-out batches (of the case's shape) for the quality figures."""
    breakdown: bool = True
    """After the timed steps, one instrumented step splits the tensor peak by category (MemTracker)."""


class ModelEntry(BaseModel):
    """One model source: `size` (built-in, harness/models/config.py), `hf` (a transformers preset),
    `hf_config` (a local config.json) or `factory` ("module:function"); the source's fields follow
    (ModelConfig fields, transformers config fields, or kwargs/vocab_size/max_seq_len). See docs/models.md."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    size: str | None = None


class MatrixEntry(Strict):
    model: list[str] = Field(min_length=1)
    workload: list[str] = Field(min_length=1)
    techniques: list[str] = Field(min_length=1)
    batch_size: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, min_length=1)
    """Overrides the workloads' batch sizes; each value makes its own case."""
    seq_len: list[Annotated[int, Field(ge=2)]] | None = Field(default=None, min_length=1)
    """Overrides the workloads' sequence lengths; each value makes its own case."""
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    """Partial combinations to drop, e.g. {workload: infer, techniques: ckpt}."""
    include: list[dict[str, Any]] = Field(default_factory=list)
    """Whole combinations to add: model, workload, techniques (and optionally batch_size, seq_len)."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the suite's defaults for this block's cases (e.g. fewer steps for a big model)."""


class Suite(Strict):
    version: Literal[1]
    """Suite format version; this harness reads version 1."""
    name: str | None = None
    """Label for the run; defaults to the file name."""
    description: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    models: dict[str, ModelEntry] = Field(min_length=1)
    workloads: dict[str, dict[str, Any]] = Field(min_length=1)
    """Named workloads: `kind` (train, infer, ...) and that kind's options."""
    techniques: dict[str, list[Any]] = Field(min_length=1)
    """Named technique combinations: a list of technique names or {name: {options}}; [] is the baseline."""
    matrix: list[MatrixEntry] = Field(min_length=1)
    """One matrix block or a list of them (load.py turns a single mapping into a list of one)."""
