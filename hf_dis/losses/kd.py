"""Classic (full-softmax) knowledge distillation: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_dis._checks import check_logits, check_same_classes, check_temperature


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) with p = softmax(z / T), averaged over the batch.

    Args:
        student_logits: `[B, C]`, carries the gradient.
        teacher_logits: `[B, C]`, treated as a constant target.
        temperature: T > 0. The T^2 factor keeps the gradient scale independent of T.

    Returns:
        A scalar in float32, whatever the input dtype (the softmax parts run in float32, so bf16 autocast is safe).
    """
    check_temperature(temperature)
    check_same_classes(student_logits, teacher_logits)
    check_logits(teacher_logits, "teacher_logits")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
