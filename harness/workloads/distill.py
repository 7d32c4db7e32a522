"""Knowledge distillation: a frozen teacher and the case's student train together (Hinton et al. 2015).

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s)

The soft term is the proper KL divergence, sum_i t_i (log t_i - log s_i), i.e. the cross-entropy
-sum_i t_i log s_i minus the teacher's entropy: the seed writes it as sum_i t_i log s_i, which lacks the
minus sign (minimising it would push the student away from the teacher). The teacher's entropy does not
depend on the student, so the gradients are the cross-entropy's; the KL form is 0 when the two agree,
which makes the logged term readable. T^2 keeps the soft term's gradients on the scale of the hard
term's as T grows (Hinton et al. 2015, section 2).

The student is the case's model with the case's techniques, built and stepped exactly as the train
workload does (same seed: same initial weights and batches as the plain `train` case of the model);
only the loss differs. The teacher is a named size (plus overrides), frozen, in eval mode, built from
seed + 1 (random init) or from the cached reference weights trained on the corpus, and untouched by
the case's techniques: it runs outside autocast, in its own `teacher_dtype`.

Memory of a step (docs/techniques.md): the student's training step + the teacher's weights + the teacher's
forward transients (nothing is saved for backward under no_grad) + the teacher's logits, b*s*V per
micro-batch, held until the loss. The result reports the teacher's figures separately.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from harness.case import CaseSpec
from harness.errors import allowed, closest
from harness.models.config import CONFIG_FIELDS, SIZES, ModelConfig
from harness.models.source import ModelSource, config_of
from harness.techniques.base import Context, Technique
from harness.workloads.base import Session, Workload, WorkloadConfig
from harness.workloads.train import TrainSession, plain_loss

if TYPE_CHECKING:
    import torch

    from harness.models.transformer import Transformer


TeacherDtype = Literal["float32", "bfloat16"]
TeacherWeights = Literal["random", "reference"]

# ModelConfig's fields as a strict pydantic model, so teacher overrides get typed errors (as models do).
_MODEL_FIELDS: type[BaseModel] = create_model(
    "TeacherModelFields",
    __config__=ConfigDict(strict=True, extra="forbid"),
    **{name: (hint, ...) for name, hint in typing.get_type_hints(ModelConfig).items()},  # type: ignore[call-overload]
)


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"unknown teacher size {size!r}; allowed: {allowed(SIZES)}{closest(size, SIZES)}")
    return size


def resolve_teacher(size: str, overrides: dict[str, Any]) -> ModelConfig:
    """The teacher's ModelConfig: the named size with `overrides`; ValueError says what is wrong."""
    check_size(size)
    for key in overrides:
        if key not in CONFIG_FIELDS:
            raise ValueError(
                f"unknown model field {key!r}; allowed: {allowed(CONFIG_FIELDS)}{closest(key, CONFIG_FIELDS)}"
            )
    merged = {**SIZES[size].to_dict(), **overrides}
    try:
        _MODEL_FIELDS.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{'.'.join(map(str, err['loc']))}: {err['msg'].lower()}") from None
    return ModelConfig(**merged)  # __post_init__ checks d_model % n_heads


class DistillConfig(WorkloadConfig):
    """Options of a `distill` workload: the teacher and the loss's temperature and weight."""

    teacher: str
    """Named model size (harness/models/config.py SIZES) of the teacher; its vocab must be the student's."""
    teacher_overrides: dict[str, Any] = Field(default_factory=dict)
    """ModelConfig fields that override the teacher's size, as under `models:` (e.g. n_layers: 8)."""
    teacher_dtype: TeacherDtype = "float32"
    """The teacher's weight dtype: bfloat16 halves its weights and logits; the loss is computed in fp32."""
    teacher_weights: TeacherWeights = "reference"
    """`reference` (default; with corpus data and reference_steps > 0): trained on the corpus for
    `reference_steps` steps (harness/corpus.py, cached; `Distill.prepare` fills the cache before the
    case process starts), so its soft targets carry knowledge; `random`: seeded init (seed + 1, not
    the student's), for memory-only studies."""
    temperature: float = Field(default=2.0, gt=0)
    """T: both distributions are softened as softmax(z / T); the soft term is scaled by T^2."""
    alpha: float = Field(default=0.5, ge=0, le=1)
    """Weight of the soft (KL) term; 1 - alpha weighs the hard cross-entropy. 0 is plain training."""

    @field_validator("teacher")
    @classmethod
    def _known_size(cls, size: str) -> str:
        return check_size(size)

    @field_validator("teacher_overrides")
    @classmethod
    def _valid_overrides(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "teacher" in info.data:  # else the size's own error is the one reported
            resolve_teacher(info.data["teacher"], overrides)
        return overrides

    def teacher_config(self) -> ModelConfig:
        return resolve_teacher(self.teacher, self.teacher_overrides)


# ---- the loss --------------------------------------------------------------------------------------


def _wide(t: torch.Tensor) -> torch.Tensor:
    # The loss runs in fp32 at least (as next_token_loss does); float64 stays float64 for exact tests.
    import torch

    return t if t.dtype == torch.float64 else t.float()


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over positions of KL(softmax(z_t / T) || softmax(z_s / T)) for (N, V) logits.

    KL = sum_i t_i (log t_i - log s_i): the cross-entropy against the teacher minus its entropy.
    """
    import torch.nn.functional as F

    log_s = F.log_softmax(_wide(student_logits) / temperature, dim=-1)
    log_t = F.log_softmax(_wide(teacher_logits) / temperature, dim=-1)
    # batchmean: the sum over the vocab, averaged over the N positions (the true KL per position).
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CE, KL) of (B, T, V) logits and (B, T) targets; loss = alpha T^2 KL + (1 - alpha) CE.

    CE is computed exactly as `next_token_loss` does, so with alpha = 0 the loss (and its gradient) is
    bit-for-bit the train workload's.
    """
    import torch.nn.functional as F

    v = student_logits.size(-1)
    z_s = _wide(student_logits).reshape(-1, v)  # (B*T, V)
    ce = F.cross_entropy(z_s, targets.reshape(-1))
    kl = soft_kl(z_s, teacher_logits.reshape(-1, v), temperature)
    loss = alpha * temperature**2 * kl + (1.0 - alpha) * ce
    return loss, ce, kl


# ---- the teacher -----------------------------------------------------------------------------------


def check_vocab(student: ModelSource, teacher: ModelConfig) -> None:
    if student.vocab_size != teacher.vocab_size:
        raise ValueError(
            f"distill: teacher vocab_size {teacher.vocab_size} != student vocab_size {student.vocab_size}; "
            "the KL compares distributions over the same tokens: set teacher_overrides.vocab_size: "
            f"{student.vocab_size}"
        )


def teacher_state(case: CaseSpec, config: DistillConfig) -> dict[str, torch.Tensor] | None:
    """The teacher's trained weights when `teacher_weights: reference` (cached by the corpus module;
    trained now if absent), else None. Like the student's, only with corpus data and reference_steps > 0:
    random tokens have nothing to learn."""
    if config.teacher_weights != "reference" or not case.uses_reference_weights:
        return None
    from harness.corpus import reference_model
    from harness.data import corpus_for

    return reference_model(config.teacher_config(), corpus_for(case), case.reference_steps, case.seed + 1)


def build_teacher(case: CaseSpec, config: DistillConfig, ctx: Context) -> Transformer:
    """The frozen teacher: no grad, eval mode, in `teacher_dtype`, seeded apart from the student."""
    import torch

    from harness.models.transformer import Transformer

    torch.manual_seed(ctx.seed + 1)  # not the student's init, even when the two configs are equal
    teacher = Transformer(config.teacher_config())
    weights = teacher_state(case, config)
    if weights is not None:
        teacher.load_state_dict(weights)
    teacher.to(device=ctx.device, dtype=getattr(torch, config.teacher_dtype))  # in place
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)  # no gradient buffers, no optimizer state
    return teacher


# ---- the session -----------------------------------------------------------------------------------


class DistillSession(TrainSession):
    """The train session's student, optimizer, step plan and batches, with the distillation loss as the
    plan's loss function: micro-batching, loss scaling and step contexts are the train step's own."""

    def __init__(
        self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int, config: DistillConfig
    ) -> None:
        teacher_cfg = config.teacher_config()
        check_vocab(config_of(case.model), teacher_cfg)  # before anything is built (any student source)
        if case.seq_len > teacher_cfg.max_seq_len:
            raise ValueError(
                f"distill: seq_len {case.seq_len} exceeds the teacher's max_seq_len "
                f"{teacher_cfg.max_seq_len}; raise it under teacher_overrides"
            )
        super().__init__(case, techniques, ctx, n_steps)
        if self.plan.loss_fn is not plain_loss:
            # A technique that rewrites the loss (chunked CE, L1) would be silently replaced here.
            raise ValueError("distill computes its own loss; a technique that replaces the loss cannot apply")
        self.config, self.device = config, ctx.device
        self.teacher = build_teacher(case, config, ctx)
        self.plan.loss_fn = self._loss
        self.student_ce: list[float] = []
        self.soft_kl: list[float] = []
        self._parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.teacher_logits_bytes = 0

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        # Outside the student's autocast (the teacher's precision is teacher_dtype) and without autograd:
        # no_grad, not inference_mode, because the KL saves the teacher's log-probabilities for backward.
        import torch

        with torch.no_grad(), torch.autocast(device_type=self.device, enabled=False):
            logits: torch.Tensor = self.teacher(x)  # (B, T, V)
        return logits

    def _loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_t = self.teacher_logits(x)
        self.teacher_logits_bytes = max(self.teacher_logits_bytes, z_t.numel() * z_t.element_size())
        loss, ce, kl = distill_loss(model(x), z_t, y, self.config.temperature, self.config.alpha)
        k = self.plan.micro_batches
        # Divided by k as the train step divides its loss: the CE record is then the train loss's value.
        self._parts.append((ce.detach() / k, kl.detach() / k))
        return loss

    def step(self, i: int) -> float:
        """One train step on the distillation loss; records the student's CE and the KL of the step."""
        self._parts.clear()
        loss = super().step(i)
        ce, kl = 0.0, 0.0
        for ce_part, kl_part in self._parts:  # summed in the order the train step sums its loss
            ce += float(ce_part)
            kl += float(kl_part)
        self.student_ce.append(ce)
        self.soft_kl.append(kl)
        self._parts.clear()
        return loss

    def teacher_forward_peak_bytes(self) -> int:
        """Tensor bytes alive at the peak of one teacher forward on one micro-batch (logits included):
        the transient distillation adds on top of the student's step. One untimed forward."""
        from harness.workloads._peak_mode import PeakTensorBytes

        x = self.batches[0][0].chunk(self.plan.micro_batches)[0]
        with PeakTensorBytes() as mode:
            self.teacher_logits(x)
        return int(mode.peak)

    def extra_metrics(self) -> dict[str, Any]:
        params = list({id(p): p for p in self.teacher.parameters()}.values())  # tied tensors once
        return {
            **super().extra_metrics(),
            "teacher_param_count": sum(p.numel() for p in params),
            "teacher_param_bytes": sum(p.numel() * p.element_size() for p in params),
            "teacher_logits_bytes": self.teacher_logits_bytes,
            "teacher_forward_peak_bytes": self.teacher_forward_peak_bytes(),
            "student_ce_loss": list(self.student_ce),
            "soft_kl_loss": list(self.soft_kl),
        }


class Distill(Workload):
    """Train the case's student against a frozen teacher's softened outputs plus the true next token."""

    name: ClassVar[str] = "distill"
    Config: ClassVar[type[WorkloadConfig]] = DistillConfig

    def _config(self) -> DistillConfig:
        if not isinstance(self.config, DistillConfig):
            raise TypeError(f"distill needs a DistillConfig, got {type(self.config).__name__}")
        return self.config

    def case_reason(self, case: CaseSpec) -> str | None:
        teacher = self._config().teacher_config()
        try:
            check_vocab(config_of(case.model), teacher)
        except ValueError as e:
            return str(e).removeprefix("distill: ")
        return None

    def prepare(self, case: CaseSpec) -> None:
        """Train (or find in the cache) a reference teacher in the parent, before the case process
        starts, so that process only loads it: training is no part of the case's time or memory.
        Nothing to do for a random teacher."""
        teacher_state(case, self._config())

    def setup(self, case: CaseSpec, techniques: list[Technique], ctx: Context, n_steps: int) -> Session:
        return DistillSession(case, techniques, ctx, n_steps, self._config())
