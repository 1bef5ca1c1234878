"""Losses: full Hinton KD, its estimators over a sampled set of classes, the combined objective, the batch-hard
triplet loss of re-ID recipes, and the similarity-preserving term on embeddings."""

from hf_dis.losses.distillation import DistillationLoss, distillation_loss, logits_at, sampled_distillation_loss
from hf_dis.losses.kd import kd_loss
from hf_dis.losses.sampled import ESTIMATORS, sampled_cross_entropy, sampled_kd_loss
from hf_dis.losses.similarity import similarity_preserving_loss
from hf_dis.losses.triplet import batch_hard_triplet_loss

__all__ = [
    "ESTIMATORS",
    "DistillationLoss",
    "batch_hard_triplet_loss",
    "distillation_loss",
    "kd_loss",
    "logits_at",
    "sampled_cross_entropy",
    "sampled_distillation_loss",
    "sampled_kd_loss",
    "similarity_preserving_loss",
]
