"""Distillation losses: full Hinton KD and its estimators over a sampled set of classes."""

from hf_dis.losses.kd import kd_loss
from hf_dis.losses.sampled import ESTIMATORS, sampled_cross_entropy, sampled_kd_loss

__all__ = ["ESTIMATORS", "kd_loss", "sampled_cross_entropy", "sampled_kd_loss"]
