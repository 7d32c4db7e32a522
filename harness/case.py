"""A case: one model x workload x technique combination with every setting that determines it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.metrics.record import flatten

SCHEMA_VERSION = 1

# Settings that decide whether a case finishes, not what it measures: two runs that differ only in
# these are still comparable, so they stay out of the id.
RUN_SETTINGS = frozenset(
    {
        "repeats",
        "timeout_s",
        "memory_limit_bytes",
        "sample_interval_ms",
        "timing_pass",
        "suite",
        # Untimed extras after the measured steps: they add figures, never change the measured ones.
        "quality",
        "heldout_batches",
        "breakdown",
    }
)


# Spec fields that may differ between a case and its baseline: the technique combination itself, and
# the run settings that do not change the math of the steps (the same ones a case id leaves out).
BASELINE_IGNORED = RUN_SETTINGS | {"techniques", "techniques_name"}


def baseline_key(spec: Mapping[str, Any]) -> str:
    """The one definition of "this case's baseline": the case with the same spec but no techniques
    (run settings aside). Takes a spec nested (`record["spec"]`) or flattened (`model.d_model` keys);
    both give the same key. Exactness, the report and the summary all pair cases by it."""
    flat = {
        k: v
        for k, v in flatten(spec).items()
        if k.split(".", 1)[0] not in BASELINE_IGNORED and not (v is None or v != v)  # None/NaN: unset
    }
    return json.dumps(flat, sort_keys=True, default=str)


class TechniqueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    config: dict[str, Any]


class CaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    suite: str
    model_name: str
    model: dict[str, Any]  # resolved ModelConfig fields, before technique rewrites
    workload_name: str
    workload: dict[str, Any]  # resolved workload config, `kind` included
    techniques_name: str
    techniques: list[TechniqueSpec]  # in composition order; empty for the baseline
    batch_size: int
    seq_len: int
    device: Literal["cpu", "cuda"]
    dtype: Literal["float32", "bfloat16"]
    seed: int
    warmup_steps: int
    measured_steps: int
    threads: int
    host_malloc_mmap_threshold_bytes: int | None
    data: Literal["corpus", "random"]
    corpus_text_file: str | None
    reference_steps: int
    # run settings (see RUN_SETTINGS)
    repeats: int
    timeout_s: float
    memory_limit_bytes: int | None
    sample_interval_ms: float
    timing_pass: bool
    quality: bool
    heldout_batches: int
    breakdown: bool

    @property
    def uses_reference_weights(self) -> bool:
        """Every workload starts from weights trained on the corpus (`reference_steps`): inference
        serves them, training fine-tunes them (adapters and QLoRA on a trained base), so a quality
        figure measures what the technique costs, not how fast a random init starts to learn."""
        return self.data == "corpus" and self.reference_steps > 0

    @property
    def name(self) -> str:
        base = f"{self.model_name}/{self.workload_name}/{self.techniques_name}"
        wl = self.workload
        if (self.batch_size, self.seq_len) != (wl.get("batch_size"), wl.get("seq_len")):
            base += f"@b{self.batch_size}s{self.seq_len}"
        return base

    @property
    def baseline_key(self) -> str:
        """Equal for this case and the baseline it is compared against (see `baseline_key`)."""
        return baseline_key(self.model_dump(mode="json"))

    @property
    def workload_kind(self) -> str:
        return str(self.workload["kind"])

    def identity(self) -> dict[str, Any]:
        """Everything that determines the measurement; the case id hashes exactly this."""
        data = self.model_dump(mode="json", exclude=set(RUN_SETTINGS))
        # Names are labels; the definitions under them decide the measurement.
        for label in ("model_name", "workload_name", "techniques_name"):
            data.pop(label)
        # The case's own batch_size/seq_len are what ran; the workload's defaults are not a second truth.
        data["workload"] = {k: v for k, v in data["workload"].items() if k not in ("batch_size", "seq_len")}
        return data

    @property
    def case_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
