"""Generation with a KV cache: prefill a batch of prompts, then greedy decode steps of one token each.

One step of this workload is one whole generation: the prefill over `prompt_len` tokens gives the first
new token, then `new_tokens - 1` decode forwards each feed the last token and give the next. The length
is fixed (no stop token), so every technique does the same work. Figures (docs/generate.md):

    generate_prefill_time_s_median          the prefill forward, median over measured steps
    generate_decode_token_latency_s_median  one decode forward, median over every measured decode token
    generate_decode_token_latency_s_iqr
    generate_new_tokens_per_s               batch x new_tokens / (prefill + all decode forwards), median
                                            over measured steps (new tokens only; prompts not counted)
    kv_cache_bytes                          real storage of the cache's tensors after the last token
    kv_cache_analytic_bytes                 2 x layers x kv_heads x head_dim x tokens x batch x bytes/elt
    generate_memory_by_length               per decode token of the last step: tokens in context, cache
                                            bytes, process RSS (and CUDA allocated) at that moment
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from harness.case import CaseSpec
from harness.data import case_batches, reference_weights
from harness.models.kv_cache import CacheSpec, analytic_bytes, bytes_per_element, storage_bytes
from harness.models.source import config_of
from harness.techniques.base import Context, StepPlan, Technique
from harness.workloads.base import Session, Workload, WorkloadConfig, build_model
from harness.workloads.train import plain_loss

if TYPE_CHECKING:
    import torch

    from harness.models.decoding import BuiltinDecoder, HFDecoder

MAX_TIMELINE_POINTS = 512


class GenerateConfig(WorkloadConfig):
    """Options of a generate workload. `seq_len` is not set by hand: it is prompt_len + new_tokens, the
    context the model must hold (checked against max_seq_len like every workload's seq_len)."""

    batch_size: int = Field(default=4, ge=1)
    """Prompts generated in parallel."""
    prompt_len: int = Field(default=64, ge=1)
    """Tokens per prompt (the prefill)."""
    new_tokens: int = Field(default=32, ge=2)
    """Tokens generated per prompt, greedy, fixed length (no stop token)."""
    cache: Literal["dynamic", "static"] = "dynamic"
    """KV-cache storage: dynamic (grown per token) or static (allocated once for the whole length)."""

    @model_validator(mode="before")
    @classmethod
    def _total_length(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        total = int(data.get("prompt_len", 64)) + int(data.get("new_tokens", 32))
        if "seq_len" in data and data["seq_len"] != total:
            raise ValueError(
                f"seq_len of a generate workload is prompt_len + new_tokens ({total}); "
                "set prompt_len and new_tokens instead"
            )
        return {**data, "seq_len": total}


class GenerateSession(Session):
    def __init__(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> None:
        import torch

        from harness.models.decoding import decoder_for

        wl = GenerateConfig.model_validate(case.workload)
        self.case, self.warmup = case, case.warmup_steps
        self.new_tokens = wl.new_tokens
        self.prompt_len = case.seq_len - wl.new_tokens  # a matrix seq_len override moves the prompt
        if self.prompt_len < 1:
            raise ValueError(f"seq_len {case.seq_len} leaves no prompt before {wl.new_tokens} new tokens")
        self.model = _build(case, techniques, ctx)
        self.decoder = decoder_for(self.model)
        self.spec = cache_spec(
            CacheSpec(storage="static" if wl.cache == "static" else "dynamic"), techniques, ctx
        )
        self.plan = StepPlan(loss_fn=plain_loss)
        for t in techniques:
            t.plan_step(self.plan, ctx)  # autocast applies to generation too
        self.prompts = [x[:, : self.prompt_len] for x, _ in self._batches(n_steps, "train")]
        self.samples_per_step = case.batch_size
        self.tokens_per_step = case.batch_size * self.new_tokens  # new tokens only
        self.sync: Callable[[], None] = torch.cuda.synchronize if ctx.device == "cuda" else _no_sync
        self.prefill_s: list[float] = []
        self.decode_s: list[list[float]] = []
        self.kv_bytes = 0
        self.timeline: dict[str, list[Any]] = {}

    def _batches(self, n: int, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        device = str(next(self.model.parameters()).device)
        return case_batches(self.case, n, self.decoder_vocab(), split, device)

    def decoder_vocab(self) -> int:
        from harness.models.decoding import HFDecoder

        head = self.decoder.model.get_output_embeddings() if isinstance(self.decoder, HFDecoder) else None
        weight = head.weight if head is not None else self.model.lm_head.weight
        return int(weight.shape[0])

    @property
    def max_tokens(self) -> int:
        """Tokens that enter the cache: the prompt and every new token but the last (never fed back)."""
        return self.prompt_len + self.new_tokens - 1

    def step(self, i: int) -> float:
        """One generation; returns the mean negative log-likelihood of the greedy tokens (nats)."""
        record = i == self.case.warmup_steps + self.case.measured_steps - 1
        g = generate(self.decoder, self.prompts[i], self.spec, self.new_tokens, self.plan, self.sync, record)
        if i >= self.warmup:
            self.prefill_s.append(g.prefill_s)
            self.decode_s.append(g.decode_s)
        if record:
            self.timeline = g.timeline
            self.kv_bytes = g.timeline["kv_cache_bytes"][-1]
        return g.nll_nats

    def extra_metrics(self) -> dict[str, Any]:
        return generation_figures(self)

    def quality_metrics(self) -> dict[str, Any]:
        """Per-token agreement and KL against the fp32 uncompressed run (see `generation_quality`)."""
        return generation_quality(self)


def _no_sync() -> None:
    return None


def _build(case: CaseSpec, techniques: list[Technique], ctx: Context) -> torch.nn.Module:
    cfg = config_of(case.model)  # any model source (harness.models.source)
    model = build_model(cfg, techniques, ctx, reference_weights(case, cfg, verify=False))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def cache_spec(spec: CacheSpec, techniques: list[Technique], ctx: Context) -> CacheSpec:
    """The workload's cache option, then each technique's change to it (kv quantization, window, ...)."""
    for t in techniques:
        configure = getattr(t, "configure_cache", None)
        if configure is not None:
            spec = configure(spec, ctx)
    return spec


# ---- the generation loop -----------------------------------------------------------------------------


@dataclass
class Generation:
    tokens: torch.Tensor  # (B, new_tokens): the model's argmax at each generated position
    nll_nats: float  # mean negative log-likelihood of those tokens
    prefill_s: float
    decode_s: list[float]  # one per decode forward (new_tokens - 1)
    timeline: dict[str, list[Any]]  # memory by length, when recorded
    logits: torch.Tensor | None  # (B, new_tokens, V) fp32, when kept


def generate(
    decoder: BuiltinDecoder | HFDecoder,
    prompt: torch.Tensor,
    spec: CacheSpec,
    new_tokens: int,
    plan: StepPlan,
    sync: Callable[[], None] = _no_sync,
    record: bool = False,
    forced: torch.Tensor | None = None,
    keep_logits: bool = False,
) -> Generation:
    """Prefill then `new_tokens - 1` decode forwards, each feeding the last token. `forced` (B, N): feed
    these tokens instead of the argmax (teacher forcing). `keep_logits`: return every position's logits."""
    import torch

    b = prompt.size(0)
    kv = decoder.new_cache(spec, b, prompt.size(1) + new_tokens - 1)
    timeline: dict[str, list[Any]] = {
        k: [] for k in ("tokens_count", "kv_cache_bytes", "host_rss_bytes", "t_s")
    }
    chosen, nll, decode, kept = [], [], [], []
    t_start = time.perf_counter()
    with torch.inference_mode(), plan.context():
        sync()
        logits = decoder.logits(prompt, kv).float()
        sync()
        prefill = time.perf_counter() - t_start
        for j in range(new_tokens):
            logp = torch.log_softmax(logits, dim=-1)
            tok = logp.argmax(-1)
            chosen.append(tok)
            nll.append(-logp.gather(-1, tok[:, None]).mean())
            if keep_logits:
                kept.append(logits)
            if record:
                _sample(timeline, prompt.size(1) + j, kv, time.perf_counter() - t_start)
            if j == new_tokens - 1:
                break
            feed = forced[:, j] if forced is not None else tok
            t0 = time.perf_counter()
            logits = decoder.logits(feed[:, None], kv).float()
            sync()
            decode.append(time.perf_counter() - t0)
    all_logits = torch.stack(kept, dim=1) if kept else None
    return Generation(
        torch.stack(chosen, 1), float(torch.stack(nll).mean()), prefill, decode, timeline, all_logits
    )


def _sample(timeline: dict[str, list[Any]], context: int, kv: Any, t: float) -> None:
    import torch

    timeline["tokens_count"].append(context)
    timeline["kv_cache_bytes"].append(storage_bytes(kv))
    timeline["host_rss_bytes"].append(_rss_bytes())
    timeline["t_s"].append(round(t, 6))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        timeline.setdefault("gpu_allocated_bytes", []).append(int(torch.cuda.memory_allocated()))


def _rss_bytes() -> int | None:
    """This process's resident set now (/proc/self/statm: pages), or None off Linux."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# ---- figures ---------------------------------------------------------------------------------------


def generation_figures(s: GenerateSession) -> dict[str, Any]:
    from harness.runner.case_runner import iqr

    if not s.prefill_s:
        return {"generate_unavailable_reason": "no measured generation steps"}
    tokens = [t for step in s.decode_s for t in step]
    per_step = [p + sum(d) for p, d in zip(s.prefill_s, s.decode_s, strict=True)]
    lay = s.decoder.layout
    param = next(s.model.parameters())
    dtype_bytes = param.element_size() if param.is_floating_point() else 4
    kept = min(s.spec.window, s.max_tokens) if s.spec.window else s.max_tokens
    elt = bytes_per_element(s.spec, lay.head_dim, _kv_dtype_bytes(s, dtype_bytes))
    analytic = analytic_bytes(lay.layers, lay.kv_heads, lay.head_dim, kept, s.case.batch_size, elt)
    return {
        "generate_prefill_time_s_median": statistics.median(s.prefill_s),
        "generate_decode_token_latency_s_median": statistics.median(tokens),
        "generate_decode_token_latency_s_iqr": iqr(tokens),
        "generate_new_tokens_per_s": s.case.batch_size * s.new_tokens / statistics.median(per_step),
        "kv_cache_bytes": s.kv_bytes,
        "kv_cache_analytic_bytes": analytic,
        "kv_cache_mismatch_reason": _mismatch(s.kv_bytes, analytic),
        "kv_cache_layout": {
            "layers": lay.layers,
            "kv_heads": lay.kv_heads,
            "head_dim": lay.head_dim,
            "tokens_count": kept,
            "batch": s.case.batch_size,
            "element_bytes": elt,
            "storage": s.spec.storage,
            "window": s.spec.window,
            "bits": s.spec.bits,
        },
        "generate_memory_by_length": _thin(s.timeline),
    }


def _mismatch(measured: int, analytic: int) -> str | None:
    """Why the measured cache is not its layout's arithmetic, when it is not (more than 1 % apart)."""
    if abs(measured - analytic) <= 0.01 * max(analytic, 1):
        return None
    return (
        f"the cache holds {measured} bytes, its layout says {analytic}: it keeps other than the "
        "settings ask (a library cache that ignores one?)"
    )


def _kv_dtype_bytes(s: GenerateSession, param_bytes: int) -> int:
    """Width of the K/V the model computes: autocast's dtype when a step context sets one."""
    if s.plan.contexts and param_bytes == 4:
        return 2  # autocast to bf16/fp16 computes the projections, hence K/V, in 16 bits
    return param_bytes


def _thin(timeline: dict[str, list[Any]]) -> dict[str, list[Any]]:
    n = len(timeline.get("tokens_count", []))
    if n <= MAX_TIMELINE_POINTS:
        return timeline
    keep = sorted({round(i * (n - 1) / (MAX_TIMELINE_POINTS - 1)) for i in range(MAX_TIMELINE_POINTS)})
    return {k: [v[i] for i in keep] for k, v in timeline.items()}


# ---- quality -----------------------------------------------------------------------------------------


def generation_quality(s: GenerateSession) -> dict[str, Any]:
    """The fp32 model without techniques generates greedily from held-out prompts with a plain dynamic
    cache; the case's model (its techniques, cache and step contexts) is then teacher-forced on those
    same tokens, so position j of both sees the same context. Per generated position: KL(fp32 || case)
    of the next-token distribution, and whether the case's top-1 token is the fp32 run's token. Each
    generated sequence is one sample (its positions share a context, so they are not independent): the
    means come with a bootstrap interval over sequences."""
    from harness.analysis.quality import agreement_with_intervals, kl_divergence, top1_agreement
    from harness.models.decoding import decoder_for

    heldout = s._batches(max(1, s.case.heldout_batches), "heldout")
    ref = decoder_for(_fp32_reference(s.case))
    plain = StepPlan(loss_fn=plain_loss)
    kl: list[float] = []
    agree: list[float] = []
    for x, _ in heldout:
        prompt = x[:, : s.prompt_len]
        free = generate(ref, prompt, CacheSpec(), s.new_tokens, plain, keep_logits=True)
        forced = generate(
            s.decoder, prompt, s.spec, s.new_tokens, s.plan, forced=free.tokens, keep_logits=True
        )
        assert free.logits is not None and forced.logits is not None
        for ref_row, case_row in zip(free.logits, forced.logits, strict=True):  # one generated sequence
            kl.append(kl_divergence(case_row, ref_row)["kl_divergence_nats"])
            agree.append(top1_agreement(case_row, ref_row)["top1_agreement_fraction"])
    # Every sequence has new_tokens positions, so the mean over sequences is the token-weighted mean.
    return agreement_with_intervals(kl, agree)


def _fp32_reference(case: CaseSpec) -> torch.nn.Module:
    """The same starting weights with no technique, in fp32, on the case's device."""
    from harness.runner.session import context_for

    ctx = context_for(case)
    ctx32 = Context(**{**ctx.__dict__, "dtype": "float32"})
    return _build(case, [], ctx32)


class Generate(Workload):
    """Prefill + greedy decode with a KV cache, fixed length: latency per token and the cache's memory."""

    name: ClassVar[str] = "generate"
    Config: ClassVar[type[WorkloadConfig]] = GenerateConfig

    def setup(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> Session:
        return GenerateSession(case, techniques, ctx, n_steps)
