"""What every class sampler shares: the sampled set it returns, forced classes, exact inclusion probabilities,
de-duplication, scopes, validation and the random state.

A sampler draws K classes **with replacement** from a proposal q, drops duplicates and classes already forced in
(masking them, so shapes stay fixed), and reports for each kept class the exact inclusion probability
pi_j = 1 - (1 - q_j)^K. Forced classes (the label and the teacher's top-m, the "proposal prior" of docs/method.md)
have pi = 1.
Layout of a sampled set: the forced columns first, then the K drawn ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from hf_dis._checks import check_labels, check_logits, check_num_sampled
from hf_dis.data.cached_logits import CachedTeacherLogits, TeacherLogits, as_dense
from hf_dis.sampling.options import check_force_teacher_topk, check_fraction, check_scope

Scope = Literal["per_example", "batch"]


@dataclass(frozen=True)
class SampledClasses:
    """A sampled set of classes S.

    Attributes:
        classes: class ids, `[B, K']` (per-example scope) or `[K']` (batch scope: one S shared by the batch).
        log_pi: log inclusion probabilities, same shape; 0 for forced classes.
        mask: bool, same shape; True where an entry is a dropped duplicate that must be ignored.
    """

    classes: torch.Tensor
    log_pi: torch.Tensor
    mask: torch.Tensor


def inclusion_log_prob(q: torch.Tensor, num_draws: int) -> torch.Tensor:
    """log(1 - (1 - q)^K): the log probability that a class of proposal mass q is drawn at least once in K draws."""
    return torch.log(-torch.expm1(num_draws * torch.log1p(-q)))


def duplicate_mask(classes: torch.Tensor) -> torch.Tensor:
    """True for every entry of the last dimension that repeats an earlier entry (the first occurrence stays)."""
    sorted_classes, order = classes.sort(dim=-1, stable=True)
    repeat = F.pad(sorted_classes[..., 1:] == sorted_classes[..., :-1], (1, 0))  # False: the first of each run
    return torch.empty_like(repeat).scatter_(-1, order, repeat)  # `order` is a permutation: every entry is written


def teacher_top(teacher_logits: TeacherLogits, k: int, ranked_classes: torch.Tensor | None) -> torch.Tensor:
    """`[B, k]` the teacher's k highest classes, in descending order of logit: the first k of `ranked_classes` when
    it holds that many (a teacher cache's ranking: no selection over the C classes), else a top-k selection."""
    if ranked_classes is not None and ranked_classes.shape[-1] >= k:
        return ranked_classes[:, :k]
    return as_dense(teacher_logits).topk(k, dim=-1, sorted=True).indices


def with_floor(q: torch.Tensor, eps: float) -> torch.Tensor:
    """Mix a proposal with eps of uniform mass, so that every class is reachable and 1 / pi is bounded."""
    return (1.0 - eps) * q + eps / q.shape[-1]


def draw_from_proposal(
    q: torch.Tensor, num_draws: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw K classes with replacement from q (`[B, C]` rows or one `[C]`); return the ids and their log pi."""
    classes = torch.multinomial(q, num_draws, replacement=True, generator=generator)
    return classes, inclusion_log_prob(q.gather(-1, classes), num_draws)


class ClassSampler:
    """Base class: subclasses implement `_draw` (the K drawn classes and their log pi, shaped by the scope).

    Args:
        num_classes: C.
        num_sampled: K, the number of draws (the sampled set has K' = K + forced entries).
        scope: ``"per_example"`` (each example has its own S) or ``"batch"`` (one S for the whole batch, drawn
            from the batch-averaged proposal, plus the union of every example's forced classes; when those and the
            K draws would take at least C columns, S is all C classes with pi = 1: exact, and no dearer).
        force_label: always include the ground-truth label (pi = 1).
        force_teacher_topk: always include the teacher's top-m classes (pi = 1); 0 turns it off.
        eps: mass of the uniform floor mixed into the proposal.
        seed: seed of the sampler's own generator, used when `sample` is given none.
    """

    name: ClassVar[str]
    #: optimizer steps between full-distillation probes that feed `update`; None for samplers that do not adapt.
    refit_every: int | None = None

    def __init__(
        self,
        num_classes: int,
        num_sampled: int,
        *,
        scope: Scope = "per_example",
        force_label: bool = True,
        force_teacher_topk: int = 1,
        eps: float = 1e-3,
        seed: int = 0,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        check_num_sampled(num_sampled, num_classes)
        check_scope(scope)
        check_force_teacher_topk(force_teacher_topk, num_classes)
        check_fraction(eps, "eps")
        self.num_classes = num_classes
        self.num_sampled = num_sampled
        self.scope = scope
        self.force_label = force_label
        self.force_teacher_topk = force_teacher_topk
        self.eps = eps
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending_rng: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, num_sampled={self.num_sampled}, "
            f"scope={self.scope!r}, force_label={self.force_label}, force_teacher_topk={self.force_teacher_topk}, "
            f"eps={self.eps})"
        )

    # --- sampling -------------------------------------------------------------------------------------------------

    def sample(
        self,
        teacher_logits: TeacherLogits,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        ranked_classes: torch.Tensor | None = None,
    ) -> SampledClasses:
        """Sample S for a batch.

        Args:
            teacher_logits: `[B, C]` teacher logits (they rank the classes and shape the proposal), or a batch's
                teacher cache columns (`hf_dis.data.CachedTeacherLogits`: its ranking is read as `ranked_classes`,
                and only a sampler whose proposal needs every class's logit, as FTIS does, forms `[B, C]` logits).
            labels: `[B]` ground-truth ids, forced into S when `force_label`; None for label-free distillation.
            generator: draws come from it; defaults to the sampler's own seeded generator (part of `state_dict`).
            ranked_classes: `[B, R']` the teacher's highest classes in descending order of logit, when known (a
                teacher cache's `teacher_top_classes`): the ranks a sampler needs are read from it where it holds
                them, instead of a top-k selection over the C classes (the same S when it is the logits' ranking).
        """
        if isinstance(teacher_logits, CachedTeacherLogits):
            ranked_classes = teacher_logits.top_classes if ranked_classes is None else ranked_classes
        else:
            teacher_logits = teacher_logits.detach()
        self._check_inputs(teacher_logits, labels)
        if ranked_classes is not None:
            if ranked_classes.dim() != 2 or ranked_classes.shape[0] != teacher_logits.shape[0]:
                raise ValueError(
                    f"ranked_classes must be [batch={teacher_logits.shape[0]}, R], got {tuple(ranked_classes.shape)}."
                )
            ranked_classes = ranked_classes.to(teacher_logits.device, torch.long)
        num_forced = self._num_forced(teacher_logits.shape[0], labels)
        if self.scope == "batch" and num_forced + self.num_sampled >= self.num_classes:
            return self._all_classes(teacher_logits)  # no fewer columns than C: sampling would save nothing
        generator = generator if generator is not None else self._own_generator(teacher_logits.device)
        num_ranks = self.ranks_read()
        if num_ranks > 0:  # one selection serves the forced top-m and the draws
            ranked_classes = teacher_top(teacher_logits, num_ranks, ranked_classes)
        forced = self._forced_classes(teacher_logits, labels, ranked_classes)
        drawn, drawn_log_pi = self._draw(teacher_logits, generator, ranked_classes)
        if self.scope == "batch":
            forced = forced.flatten()
        classes = torch.cat([forced, drawn], dim=-1)
        log_pi = F.pad(drawn_log_pi.float(), (forced.shape[-1], 0))  # 0 for the forced columns
        return SampledClasses(classes=classes, log_pi=log_pi, mask=duplicate_mask(classes))

    def _num_forced(self, batch_size: int, labels: torch.Tensor | None) -> int:
        """Columns the forced classes take in the batch scope (every example's, duplicates included)."""
        return batch_size * (int(self.force_label and labels is not None) + self.force_teacher_topk)

    def _all_classes(self, teacher_logits: TeacherLogits) -> SampledClasses:
        """S = all C classes with pi = 1 (`[B, C]` per example, `[C]` for the batch): exactly the full objective."""
        classes = torch.arange(self.num_classes, device=teacher_logits.device)
        if self.scope == "per_example":
            classes = classes.expand(teacher_logits.shape[0], -1)
        zeros = torch.zeros(classes.shape, device=classes.device)
        return SampledClasses(classes=classes, log_pi=zeros, mask=torch.zeros_like(classes, dtype=torch.bool))

    def ranks_read(self) -> int:
        """How many of each example's highest-ranked teacher classes a draw reads: the forced top-m and what `_draw`
        ranks (0: no ranking; a teacher cache must hold at least this many to spare a top-k over C)."""
        return max(self.force_teacher_topk, self._ranks_drawn_from())

    def _ranks_drawn_from(self) -> int:
        """How many of each example's highest-ranked teacher classes `_draw` reads (0: it needs no ranking)."""
        return 0

    def _draw(
        self, teacher_logits: TeacherLogits, generator: torch.Generator, ranked_classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The K drawn classes and their log pi: `[B, K]` per example, `[K]` for the batch scope. `ranked_classes`
        holds at least the `_ranks_drawn_from()` highest classes in order."""
        raise NotImplementedError

    def _forced_classes(
        self, teacher_logits: TeacherLogits, labels: torch.Tensor | None, ranked_classes: torch.Tensor | None
    ) -> torch.Tensor:
        """The label and the teacher's top-m classes (`ranked_classes` holds at least m when m > 0)."""
        parts = []
        if self.force_label and labels is not None:
            parts.append(labels.to(teacher_logits.device, torch.long).unsqueeze(-1))
        if self.force_teacher_topk > 0:
            parts.append(ranked_classes[:, : self.force_teacher_topk])
        if not parts:
            return teacher_logits.new_empty((teacher_logits.shape[0], 0), dtype=torch.long)
        return torch.cat(parts, dim=-1)

    def _check_inputs(self, teacher_logits: TeacherLogits, labels: torch.Tensor | None) -> None:
        if isinstance(teacher_logits, CachedTeacherLogits):
            if teacher_logits.num_classes != self.num_classes:
                raise ValueError(
                    f"teacher_logits has {teacher_logits.num_classes} classes, expected {self.num_classes}."
                )
            check_logits(teacher_logits.top_logits, "teacher_logits")
        else:
            check_logits(teacher_logits, "teacher_logits", self.num_classes)
        if labels is not None:
            check_labels(labels, teacher_logits.shape[0], self.num_classes)

    # --- adaptation -----------------------------------------------------------------------------------------------

    def update(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> None:
        """Learn from a full-distillation step (full `[B, C]` logits of both models). Static samplers ignore it."""
        if self.refit_every is not None:
            self.observe(self.probe_statistic(teacher_logits, student_logits, temperature))

    def probe_statistic(
        self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """What an adaptive sampler learns from one probe batch, as a tensor that can be averaged over micro-batches
        and processes before `observe`. Only adaptive samplers (`refit_every` not None) have one."""
        raise NotImplementedError(f"sampler {self.name!r} does not adapt: it has no probe statistic.")

    def observe(self, statistic: torch.Tensor) -> None:
        """Adapt to a (possibly averaged) probe statistic. Only adaptive samplers have one."""
        raise NotImplementedError(f"sampler {self.name!r} does not adapt: it observes nothing.")

    def summary(self) -> dict[str, float]:
        """What the sampler has learned, as flat numbers for a training log (empty for static samplers)."""
        return {}

    # --- state ----------------------------------------------------------------------------------------------------

    def _own_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            if self._pending_rng is not None:
                _restore_rng(self._generator, self._pending_rng)
                self._pending_rng = None
        if self._generator.device.type != device.type:
            raise ValueError(
                f"this sampler's generator lives on {self._generator.device}, but the logits are on {device}; "
                "pass generator= for that device or build a new sampler."
            )
        return self._generator

    def _check_state_name(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state is for sampler {state.get('name')!r}, not {self.name!r}.")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the generator state (and, in adaptive samplers, what they learned)."""
        if self._generator is not None:
            rng = {"device": self._generator.device.type, "state": self._generator.get_state().tolist()}
        else:
            rng = self._pending_rng
        return {"name": self.name, "seed": self.seed, "rng": rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_name(state)
        self.seed = int(state["seed"])
        rng = state.get("rng")
        if rng is None or self._generator is None:
            # Nothing drawn yet on either side, or not yet on this side: the generator is (re)made on first use.
            self._generator, self._pending_rng = None, rng
        else:
            _restore_rng(self._generator, rng)


def _restore_rng(generator: torch.Generator, rng: dict[str, Any]) -> None:
    if rng["device"] != generator.device.type:
        raise ValueError(
            f"the saved generator state is for {rng['device']!r}, but this sampler draws on {generator.device.type!r}."
        )
    generator.set_state(torch.tensor(rng["state"], dtype=torch.uint8))
