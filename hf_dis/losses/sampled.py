"""Distillation and cross-entropy over a sampled set of classes S (the sampled-softmax estimators of docs/method.md).

A sampler (`hf_dis.sampling`) gives, per example, the classes S, their log inclusion probabilities log(pi) (0 for
forced classes) and a mask of dropped duplicates. The functions here take the student's and the teacher's logits on
S only: the `[B, C]` student logits are never needed. Logits on S are `[B, K']`; `log_pi` and `mask` are `[B, K']`
(per-example scope) or `[K']` (batch scope, one S for the whole batch), and broadcast.

Log-Q correction (Jean et al. 2015; Bengio & Senecal 2008): a_j = z_j / T - log(pi_j), so that the softmax over S
estimates the softmax over all C classes. `log_q_correction=False` is the uncorrected variant (plain softmax
restricted to S, as in Partial FC): a choice the DIS paper leaves open.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from hf_dis._checks import check_logits, check_same_classes, check_temperature, values_checked
from hf_dis.losses.kd import check_divergence, divergence_of

Estimator = Literal["self_normalized", "horvitz_thompson"]
ESTIMATORS: tuple[str, ...] = ("self_normalized", "horvitz_thompson")


#: What a dropped duplicate's log pi becomes inside the losses: its corrected logit z / T - log pi falls so far below
#: the others' that its softmax weight, its importance weight 1 / pi and so its gradient are exactly 0 in float32.
#: Finite, unlike -inf, so that products with those zero weights stay 0 (0 * inf is NaN), and one tensor operation
#: masks every term instead of one masked_fill per term and its backward (each a kernel launch on a GPU).
DROPPED_LOG_PI = 1e30


def _masked_log_pi(log_pi: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """float32 log pi with dropped duplicates at `DROPPED_LOG_PI`."""
    log_pi = log_pi.float()
    return log_pi if mask is None else log_pi.masked_fill(mask, DROPPED_LOG_PI)


def _logit_offset(log_pi: torch.Tensor, mask: torch.Tensor | None, log_q_correction: bool) -> torch.Tensor | float:
    """What the scaled logits lose before the softmax over S: log pi with the correction, 0 without it (dropped
    duplicates lose `DROPPED_LOG_PI` either way)."""
    if log_q_correction:
        return _masked_log_pi(log_pi, mask)
    return 0.0 if mask is None else mask * DROPPED_LOG_PI


def sampled_kd_loss(
    student_logits_S: torch.Tensor,
    teacher_logits_S: torch.Tensor,
    log_pi: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    *,
    estimator: Estimator = "self_normalized",
    teacher_log_partition: torch.Tensor | None = None,
    log_q_correction: bool = True,
    divergence: str = "forward",
) -> torch.Tensor:
    """Sampled estimate of T^2 * KL(p_t || p_s), averaged over the batch (with `divergence="symmetric"`, of the mean
    of both directions: self-normalised estimator only).

    Estimators (both equal the full KD loss exactly when S holds all C classes with pi = 1):

    - ``self_normalized`` (default): T^2 * KL(softmax_S(a_t) || softmax_S(a_s)). Non-negative, zero when the
      student matches the teacher on S, needs only the teacher's logits on S.
    - ``horvitz_thompson``: T^2 * sum_{j in S} (p_t,j / pi_j) * (log p_t,j - z_s,j / T) + T^2 * logsumexp_S(a_s),
      with the teacher's exact probabilities p_t,j = exp(z_t,j / T - teacher_log_partition). The target term is
      unbiased (Horvitz-Thompson weights 1 / pi_j); only the log-partition is self-normalised. The first sum's
      log p_t part is a constant (no gradient) that makes the value comparable with the full loss. The weights keep
      1 / pi_j whether or not `log_q_correction` is on: the switch acts on the log-partition term only.

    Args:
        student_logits_S: `[B, K']` student logits on S.
        teacher_logits_S: `[B, K']` teacher logits on S (a constant target).
        log_pi: `[B, K']` or `[K']` log inclusion probabilities of S (0 for forced classes).
        temperature: T > 0.
        mask: `[B, K']` or `[K']` bool, True for dropped duplicates to ignore.
        estimator: ``"self_normalized"`` or ``"horvitz_thompson"``.
        teacher_log_partition: `[B]` logsumexp over all C of z_t / T; required by ``horvitz_thompson``.
        log_q_correction: subtract log(pi) from the scaled logits before the softmax over S.
        divergence: ``"forward"`` or ``"symmetric"`` (`hf_dis.losses.kd.DIVERGENCES`); the symmetric form is the
            same divergence between the two softmaxes over S.

    Returns:
        A float32 scalar (softmax parts run in float32, so bf16 autocast is safe).
    """
    check_temperature(temperature)
    check_same_classes(student_logits_S, teacher_logits_S)
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}.")
    check_divergence(divergence)
    if divergence != "forward" and estimator != "self_normalized":
        raise ValueError(
            f"divergence={divergence!r} has the self-normalised estimator only (the Horvitz-Thompson one estimates "
            "KL(p_t || p_s)); use estimator='self_normalized'."
        )
    teacher_logits_S = teacher_logits_S.detach()
    check_logits(teacher_logits_S, "teacher_logits_S")
    offset = _logit_offset(log_pi, mask, log_q_correction)
    a_s = student_logits_S.float() / temperature - offset

    if estimator == "self_normalized":
        log_q_s = F.log_softmax(a_s, dim=-1)
        log_q_t = F.log_softmax(teacher_logits_S.float() / temperature - offset, dim=-1)
        per_example = divergence_of(log_q_t, log_q_s, divergence)
    else:
        if teacher_log_partition is None:
            raise ValueError(
                "estimator='horvitz_thompson' needs teacher_log_partition = logsumexp(z_t / T) over all C."
            )
        log_p_t = teacher_logits_S.float() / temperature - teacher_log_partition.detach().float().unsqueeze(-1)
        weights = torch.exp(log_p_t - (offset if log_q_correction else _masked_log_pi(log_pi, mask)))
        target_term = weights * (log_p_t - student_logits_S.float() / temperature)
        per_example = target_term.sum(-1) + torch.logsumexp(a_s, dim=-1)
    return per_example.mean() * temperature**2


def sampled_cross_entropy(
    student_logits_S: torch.Tensor,
    classes: torch.Tensor,
    labels: torch.Tensor,
    log_pi: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    log_q_correction: bool = True,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hard-label cross-entropy over S at T = 1, averaged over the batch.

    The label must be in S (samplers force it in by default, with pi = 1); the other classes get the same log-Q
    correction as the KD term.

    Label smoothing mixes `label_smoothing` of uniform mass over all C classes into the target, as
    `F.cross_entropy(label_smoothing=...)` does; its term, the mean over C of -log p_c, is estimated on S with
    self-normalised importance weights 1/pi_j (exact when S holds every class with pi = 1). A choice of this library:
    the DIS abstract says nothing of label smoothing (docs/method.md).

    Args:
        student_logits_S: `[B, K']`.
        classes: `[B, K']` or `[K']` class ids of S.
        labels: `[B]` ground-truth class ids.
        log_pi: `[B, K']` or `[K']`.
        mask: `[B, K']` or `[K']` bool, True for dropped duplicates.
        label_smoothing: in [0, 1).
    """
    if labels.shape != student_logits_S.shape[:1]:
        raise ValueError(f"labels must have shape ({student_logits_S.shape[0]},), got {tuple(labels.shape)}.")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    is_label = classes == labels.unsqueeze(-1)  # [B, K'] for both scopes
    if mask is not None:
        is_label = is_label & ~mask
    if values_checked(labels):
        found = is_label.any(-1)
        if not bool(found.all()):
            missing = labels[~found][0].item()
            raise ValueError(
                f"label {missing} is not in the sampled classes; sample with the label forced in (force_label=True)."
            )
    offset = _logit_offset(log_pi, mask, log_q_correction)
    log_q = F.log_softmax(student_logits_S.float() - offset, dim=-1)
    loss = -(log_q * is_label).sum(-1)
    if label_smoothing > 0:
        # With the correction, log_q_j + log(pi_j) estimates log p_j; without it, log_q_j is the restricted softmax.
        log_p = log_q + log_pi.float() if log_q_correction else log_q
        masked_log_pi = offset if log_q_correction else _masked_log_pi(log_pi, mask)
        weights = torch.exp(-masked_log_pi)  # 1 / pi_j, 0 for dropped duplicates
        uniform = -(weights * log_p).sum(-1) / weights.sum(-1)
        loss = (1 - label_smoothing) * loss + label_smoothing * uniform
    return loss.mean()
