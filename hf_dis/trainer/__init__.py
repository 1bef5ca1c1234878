"""Distillation with the transformers Trainer: `DistillationArguments` and `DistillationTrainer`."""

from hf_dis.trainer.arguments import DistillationArguments
from hf_dis.trainer.sampler_state import SamplerStateCallback, load_sampler_state
from hf_dis.trainer.teacher import TeacherInputs, load_teacher
from hf_dis.trainer.trainer import DistillationTrainer

__all__ = [
    "DistillationArguments",
    "DistillationTrainer",
    "SamplerStateCallback",
    "TeacherInputs",
    "load_teacher",
    "load_sampler_state",
]
