"""Monte Carlo diagnostics of the sampled KD estimators: how far the mean sampled gradient is from the full one.

Used by the test suite and by `benchmarks/estimator_bias.py`; useful to pick K for a new task (run it on a batch of
real teacher and student logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_dis.losses import kd_loss, sampled_kd_loss
from hf_dis.sampling import ClassSampler


@dataclass(frozen=True)
class GradientError:
    """`relative_error`: ||mean sampled gradient - full gradient|| / ||full gradient||, over the student logits.
    `relative_std`: ||per-draw standard deviation|| / ||full gradient|| (the error of one draw, around its mean)."""

    relative_error: float
    relative_std: float
    num_repeats: int


def _logit_gradient(loss_fn, student_logits: torch.Tensor) -> torch.Tensor:
    student = student_logits.detach().clone().requires_grad_(True)
    loss_fn(student).backward()
    return student.grad


def sampled_gradient_error(
    sampler: ClassSampler,
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    temperature: float,
    *,
    labels: torch.Tensor | None = None,
    num_repeats: int = 1000,
    estimator: str = "self_normalized",
    log_q_correction: bool = True,
    generator: torch.Generator | None = None,
) -> GradientError:
    """Compare the sampled KD gradient with respect to the student's logits, averaged over `num_repeats` draws of
    S, with the full KD gradient.

    In the per-example scope the repeats run as one batch (the batch tiled `num_repeats` times: every row draws its
    own S independently); in the batch scope they run one after the other.
    """
    batch_size = teacher_logits.shape[0]
    full = _logit_gradient(lambda s: kd_loss(s, teacher_logits, temperature), student_logits)
    log_partition = torch.logsumexp(teacher_logits.float() / temperature, dim=-1)

    def sampled_loss(student: torch.Tensor, teacher: torch.Tensor, labels_, partition) -> torch.Tensor:
        drawn = sampler.sample(teacher, labels_, generator=generator)
        classes = drawn.classes if drawn.classes.dim() == 2 else drawn.classes.expand(teacher.shape[0], -1)
        return sampled_kd_loss(
            student.gather(1, classes),
            teacher.gather(1, classes),
            drawn.log_pi,
            temperature,
            drawn.mask,
            estimator=estimator,
            teacher_log_partition=partition,
            log_q_correction=log_q_correction,
        )

    if sampler.scope == "per_example":
        tile = lambda x: None if x is None else x.repeat(num_repeats, *([1] * (x.dim() - 1)))  # noqa: E731
        teacher, partition, labels_ = tile(teacher_logits), tile(log_partition), tile(labels)
        grads = _logit_gradient(lambda s: sampled_loss(s, teacher, labels_, partition), tile(student_logits))
        # The tiled loss averages over num_repeats * B rows: rescale each row's gradient to a B-row batch mean.
        grads = grads.view(num_repeats, batch_size, -1) * num_repeats
    else:
        grads = torch.stack(
            [
                _logit_gradient(lambda s: sampled_loss(s, teacher_logits, labels, log_partition), student_logits)
                for _ in range(num_repeats)
            ]
        )
    scale = full.norm()
    return GradientError(
        relative_error=float((grads.mean(0) - full).norm() / scale),
        relative_std=float(grads.std(0).norm() / scale),
        num_repeats=num_repeats,
    )
