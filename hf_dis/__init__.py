"""hf_dis: knowledge distillation for image models on the Hugging Face stack, with the KD loss computed over a
sampled set of classes chosen by dynamic importance sampling (DIS, arXiv 1812.00914)."""

from hf_dis.heads import SplitClassifier, split_classifier, subset_logits
from hf_dis.losses import (
    distillation_loss,
    kd_loss,
    sampled_cross_entropy,
    sampled_distillation_loss,
    sampled_kd_loss,
)
from hf_dis.models import ReIDModel, timm_classifier
from hf_dis.sampling import ClassSampler, SampledClasses, build_sampler, list_samplers
from hf_dis.trainer import (
    DistillationArguments,
    DistillationTrainer,
    DivergenceError,
    ReIDDistillationArguments,
    ReIDDistillationTrainer,
    ReIDTrainer,
    ReIDTrainingArguments,
    load_teacher,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ClassSampler",
    "DistillationArguments",
    "DistillationTrainer",
    "DivergenceError",
    "ReIDDistillationArguments",
    "ReIDDistillationTrainer",
    "ReIDModel",
    "ReIDTrainer",
    "ReIDTrainingArguments",
    "SampledClasses",
    "SplitClassifier",
    "build_sampler",
    "distillation_loss",
    "kd_loss",
    "list_samplers",
    "load_teacher",
    "sampled_cross_entropy",
    "sampled_distillation_loss",
    "sampled_kd_loss",
    "split_classifier",
    "subset_logits",
    "timm_classifier",
]
