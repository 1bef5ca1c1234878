"""Training with the transformers Trainer: `DistillationTrainer` and its arguments, and the re-ID trainers
(`ReIDTrainer` for teachers, `ReIDDistillationTrainer` for students) with theirs."""

from hf_dis.trainer.arguments import DistillationArguments
from hf_dis.trainer.buffer_sync import BufferSyncCallback
from hf_dis.trainer.curve import EvaluationCurve
from hf_dis.trainer.guard import DivergenceError, GuardedTraining
from hf_dis.trainer.imprint import ImprintHeadCallback
from hf_dis.trainer.reid import (
    ReIDDistillationArguments,
    ReIDDistillationTrainer,
    ReIDTrainer,
    ReIDTrainingArguments,
)
from hf_dis.trainer.run_folder import RunFolderOptions
from hf_dis.trainer.sampler_state import SamplerStateCallback, load_sampler_state
from hf_dis.trainer.teacher import TeacherInputs, load_teacher
from hf_dis.trainer.trainer import DistillationTrainer

__all__ = [
    "BufferSyncCallback",
    "DistillationArguments",
    "DistillationTrainer",
    "DivergenceError",
    "EvaluationCurve",
    "GuardedTraining",
    "ImprintHeadCallback",
    "ReIDDistillationArguments",
    "ReIDDistillationTrainer",
    "ReIDTrainer",
    "ReIDTrainingArguments",
    "RunFolderOptions",
    "SamplerStateCallback",
    "TeacherInputs",
    "load_teacher",
    "load_sampler_state",
]
