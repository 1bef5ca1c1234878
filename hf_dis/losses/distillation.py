"""The training objective: L = alpha * CE(z_s, y) + w * L_kd with w = 1 - alpha (the convex form) unless a KD weight is
given, over all classes (of one classifier, or of one sharded over processes) or over a sampled set.

Each returns the parts (batch means) so that callers can log them; `DistillationTrainer` uses them as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hf_dis._checks import check_labels
from hf_dis.data.cached_logits import CachedTeacherLogits, TeacherLogits
from hf_dis.heads.sharded import ClassShard, sharded_cross_entropy, sharded_kd_loss
from hf_dis.losses.kd import kd_loss
from hf_dis.losses.sampled import Estimator, sampled_cross_entropy, sampled_kd_loss
from hf_dis.sampling.base import SampledClasses


@dataclass(frozen=True)
class DistillationLoss:
    """`loss = alpha * ce_loss + w * kd_loss` (w = 1 - alpha unless given), each a float32 scalar averaged over the
    batch. `ce_loss` is None when there are no labels (alpha must then be 0), and in the sampled objective when
    alpha = 0 (the label need not be in S then)."""

    loss: torch.Tensor
    kd_loss: torch.Tensor
    ce_loss: torch.Tensor | None


def logits_at(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """`[B, K']` entries of `logits [B, C]` at `classes`, given as `[B, K']` or `[K']` (one set for the batch)."""
    return logits.gather(-1, classes.expand(logits.shape[0], -1))


def teacher_logits_at(teacher_logits: TeacherLogits, classes: torch.Tensor) -> torch.Tensor:
    """`logits_at` for teacher logits, dense or held as a batch's cache columns (read without forming `[B, C]`)."""
    if isinstance(teacher_logits, CachedTeacherLogits):
        return teacher_logits.at(classes)
    return logits_at(teacher_logits, classes)


def teacher_log_partition(teacher_logits: TeacherLogits, temperature: float) -> torch.Tensor:
    """`[B]` logsumexp over all C of z_t / T, from dense logits or from a batch's cache columns."""
    if isinstance(teacher_logits, CachedTeacherLogits):
        return teacher_logits.log_partition(temperature)
    return torch.logsumexp(teacher_logits.float() / temperature, dim=-1)


def kd_term_weight(alpha: float, kd_weight: float | None) -> float:
    """The KD term's weight: `kd_weight`, or 1 - alpha (the convex form) when it is None."""
    return 1.0 - alpha if kd_weight is None else kd_weight


def _combine(kd: torch.Tensor, ce: torch.Tensor | None, alpha: float, kd_weight: float | None) -> DistillationLoss:
    weight = kd_term_weight(alpha, kd_weight)
    if ce is None:
        if alpha > 0:
            raise ValueError(f"the batch has no labels, so alpha must be 0 (label-free distillation), got {alpha}.")
        return DistillationLoss(loss=weight * kd, kd_loss=kd, ce_loss=None)
    return DistillationLoss(loss=alpha * ce + weight * kd, kd_loss=kd, ce_loss=ce)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    *,
    kd_weight: float | None = None,
    label_smoothing: float = 0.0,
    kd_divergence: str = "forward",
) -> DistillationLoss:
    """Full objective: Hinton KD over all C classes plus the hard-label cross-entropy.

    Args:
        student_logits: `[B, C]`.
        teacher_logits: `[B, C]`, a constant target.
        labels: `[B]` class ids, or None for label-free distillation (alpha = 0).
        temperature: T of the KD term (the cross-entropy is at T = 1).
        alpha: weight of the cross-entropy in [0, 1].
        kd_weight: weight of the KD term; None: 1 - alpha.
        label_smoothing: of the cross-entropy's target, in [0, 1).
        kd_divergence: the KD term's divergence, ``"forward"`` or ``"symmetric"`` (`kd_loss`).
    """
    kd = kd_loss(student_logits, teacher_logits, temperature, divergence=kd_divergence)
    ce = None
    if labels is not None:
        check_labels(labels, student_logits.shape[0], student_logits.shape[1])
        ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return _combine(kd, ce, alpha, kd_weight)


def sampled_distillation_loss(
    student_logits_S: torch.Tensor,
    teacher_logits: TeacherLogits,
    drawn: SampledClasses,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    *,
    kd_weight: float | None = None,
    estimator: Estimator = "self_normalized",
    log_q_correction: bool = True,
    label_smoothing: float = 0.0,
    kd_divergence: str = "forward",
) -> DistillationLoss:
    """Sampled objective: `sampled_kd_loss` and `sampled_cross_entropy` over the sampled set `drawn`.

    Args:
        student_logits_S: `[B, K']` student logits at `drawn.classes` only.
        teacher_logits: `[B, C]` full teacher logits, or a batch's teacher cache columns
            (`hf_dis.data.CachedTeacherLogits`): the estimators need the teacher's values on S, and the
            Horvitz-Thompson one its log-partition over all C.
        drawn: the sampled set from a `ClassSampler` (labels forced in when alpha > 0).
        labels, temperature, alpha, kd_weight: as in `distillation_loss`.
        estimator, log_q_correction: as in `sampled_kd_loss`.
        label_smoothing: as in `sampled_cross_entropy`.
        kd_divergence: as in `distillation_loss` (the symmetric form with the self-normalised estimator only).
    """
    log_partition = None
    if estimator == "horvitz_thompson":
        log_partition = teacher_log_partition(teacher_logits, temperature)
    kd = sampled_kd_loss(
        student_logits_S,
        teacher_logits_at(teacher_logits, drawn.classes),
        drawn.log_pi,
        temperature,
        drawn.mask,
        estimator=estimator,
        teacher_log_partition=log_partition,
        log_q_correction=log_q_correction,
        divergence=kd_divergence,
    )
    ce = None
    if labels is not None and alpha > 0:
        ce = sampled_cross_entropy(
            student_logits_S,
            drawn.classes,
            labels,
            drawn.log_pi,
            drawn.mask,
            log_q_correction=log_q_correction,
            label_smoothing=label_smoothing,
        )
    return _combine(kd, ce, alpha, kd_weight)


def sharded_distillation_loss(
    student_local: torch.Tensor,
    teacher_local: torch.Tensor,
    labels: torch.Tensor | None,
    shard: ClassShard,
    temperature: float,
    alpha: float,
    *,
    kd_weight: float | None = None,
    label_smoothing: float = 0.0,
    group: dist.ProcessGroup | None = None,
) -> DistillationLoss:
    """`distillation_loss` (forward KL) over all C classes of a classifier sharded over processes
    (`hf_dis.heads.sharded`), from each process's logits of the classes it owns; the same value on every process.

    Args:
        student_local: `[N B, C / N]` the student's logits of every process's examples at this process's classes.
        teacher_local: `[N B, C / N]` the teacher's, a constant target.
        labels: `[N B]` global class ids, or None (alpha = 0).
        shard: the classes this process owns.
        temperature, alpha, kd_weight, label_smoothing: as in `distillation_loss`.
    """
    kd = sharded_kd_loss(student_local, teacher_local, temperature, group)
    ce = None
    if labels is not None:
        ce = sharded_cross_entropy(student_local, labels, shard, group, label_smoothing=label_smoothing)
    return _combine(kd, ce, alpha, kd_weight)
