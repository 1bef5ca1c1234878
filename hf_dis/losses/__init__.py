"""Distillation losses: full Hinton KD, its estimators over a sampled set of classes, and the combined objective."""

from hf_dis.losses.distillation import DistillationLoss, distillation_loss, logits_at, sampled_distillation_loss
from hf_dis.losses.kd import kd_loss
from hf_dis.losses.sampled import ESTIMATORS, sampled_cross_entropy, sampled_kd_loss

__all__ = [
    "ESTIMATORS",
    "DistillationLoss",
    "distillation_loss",
    "kd_loss",
    "logits_at",
    "sampled_cross_entropy",
    "sampled_distillation_loss",
    "sampled_kd_loss",
]
