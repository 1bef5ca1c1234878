"""Classic (full-softmax) knowledge distillation: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_dis._checks import check_logits, check_same_classes, check_temperature

#: What the KD term measures between the teacher's and the student's softmax: Hinton's KL(p_t || p_s) ("forward"),
#: or the mean of both directions, 0.5 KL(p_t || p_s) + 0.5 KL(p_s || p_t) ("symmetric", the Jensen-Shannon-style
#: form of fast-reid's logit distillation).
DIVERGENCES: tuple[str, ...] = ("forward", "symmetric")


def check_divergence(divergence: str) -> None:
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {list(DIVERGENCES)}, got {divergence!r}.")


def divergence_of(log_p_t: torch.Tensor, log_p_s: torch.Tensor, divergence: str) -> torch.Tensor:
    """Per example (summed over the last dimension): KL(p_t || p_s), or the mean of both directions."""
    forward = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if divergence == "forward":
        return forward
    return 0.5 * (forward + (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1))


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, *, divergence: str = "forward"
) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) with p = softmax(z / T), averaged over the batch (with `divergence="symmetric"`, the
    mean of KL(p_t || p_s) and KL(p_s || p_t)).

    Args:
        student_logits: `[B, C]`, carries the gradient.
        teacher_logits: `[B, C]`, treated as a constant target.
        temperature: T > 0. The T^2 factor keeps the gradient scale independent of T.
        divergence: ``"forward"`` (Hinton) or ``"symmetric"`` (`DIVERGENCES`).

    Returns:
        A scalar in float32, whatever the input dtype (the softmax parts run in float32, so bf16 autocast is safe).
    """
    check_temperature(temperature)
    check_same_classes(student_logits, teacher_logits)
    check_logits(teacher_logits, "teacher_logits")
    check_divergence(divergence)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    if divergence == "forward":
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
    return divergence_of(log_p_t, log_p_s, divergence).mean() * temperature**2
