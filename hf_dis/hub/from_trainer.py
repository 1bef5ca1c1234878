"""What a finished `DistillationTrainer` knows, as a `StudentCardData`: the two models, the objective's settings, the
sampler's learned state, the hyper-parameters, the last evaluation and the run's speed (plus the head step time,
measured here on the training device), and the teacher's own results when its folder has them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import datasets
from torch import nn
from transformers import TimmWrapperForImageClassification

from hf_dis.data.teacher_cache import teacher_cache_info
from hf_dis.data.transforms import model_normalization
from hf_dis.diagnostics import head_step_ms
from hf_dis.heads.sharded import ShardedLinear
from hf_dis.hub.card import StudentCardData, device_name
from hf_dis.models.describe import describe, num_parameters
from hf_dis.sampling import ClassSampler


class DistilledRun(Protocol):
    """What the card reads of a trainer: the narrow interface `DistillationTrainer` (and its re-ID subclass) provides,
    so that the hub builds on the trainer without importing it (the trainer imports the hub to write its card)."""

    args: Any  # DistillationArguments, or ReIDDistillationArguments (which has instances_per_identity)
    accelerator: Any
    model: nn.Module
    student_head: nn.Linear
    processing_class: Any
    input_size: tuple[int, int] | None
    train_dataset: Any
    teacher: nn.Module | None
    sampler: ClassSampler
    sampler_choice: str | None
    teacher_check: str | None
    optimizer: Any
    classifier_optimizer: Any
    state: Any


#: The Trainer's speed metrics shown in the card, and their names there.
SPEED_KEYS = {
    "train_steps_per_second": "steps per second",
    "train_samples_per_second": "examples per second",
    "train_runtime": "training time (s)",
}


def student_card_data(
    trainer: DistilledRun,
    *,
    model_name: str | None = None,
    dataset: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: list[str] | None = None,
    head_times: dict[str, float] | None = None,
) -> StudentCardData:
    """The card of `trainer`'s student (call after training and, for results, after `evaluate()`).

    Args:
        model_name: the card's title; default: the Hub repo name or the output folder's name.
        dataset: the dataset's name or Hub id (a Hub id also goes into the metadata).
        license: an SPDX id for the metadata.
        language, tags: the metadata's language and extra tags.
        head_times: `head_step_times(trainer)` measured earlier (the trainer keeps it per training step, so
            re-rendering the card does not time the head again); None measures it here.
    """
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    num_classes = trainer.student_head.out_features
    reid = hasattr(args, "instances_per_identity")  # ReIDDistillationArguments
    normalisation = model_normalization(model, trainer.processing_class)
    student = {
        "architecture": describe(model),
        "parameters": num_parameters(model),
        "classes" if not reid else "training identities": num_classes,
        "embedding size" if reid else "feature size": trainer.student_head.in_features,
    }
    if trainer.input_size is not None:
        student["input size"] = "x".join(str(side) for side in trainer.input_size)
    if isinstance(model, TimmWrapperForImageClassification):  # a timm student: the card shows timm's loading
        student["timm architecture"] = model.config.architecture
    if normalisation is not None:
        student["normalisation mean"], student["normalisation std"] = list(normalisation.mean), list(normalisation.std)
    cache = teacher_cache_info(trainer.train_dataset) if isinstance(trainer.train_dataset, datasets.Dataset) else None
    if trainer.teacher is not None:
        teacher_name = args.teacher_model if isinstance(args.teacher_model, str) else type(trainer.teacher).__name__
        if os.path.isdir(teacher_name):  # a local folder: its name, not this machine's path
            teacher_name = os.path.basename(os.path.normpath(teacher_name))
        teacher = {
            "name": teacher_name,
            "architecture": describe(trainer.teacher),
            "parameters": num_parameters(trainer.teacher),
        }
    else:  # distilled from cached logits only: what the cache recorded
        teacher = {key: (cache or {}).get(key) for key in ("teacher", "architecture", "parameters")}
        teacher["name"] = teacher.pop("teacher") or "an unrecorded teacher"
        teacher["architecture"] = teacher["architecture"] or "unknown architecture"
    if isinstance(args.teacher_model, str) and not os.path.isdir(args.teacher_model) and "/" in args.teacher_model:
        teacher["hub_id"] = args.teacher_model
    sampler = trainer.sampler
    distillation = {
        "sampler": sampler.name,
        "classes per step (K)": sampler.num_sampled,
        "fraction of classes": round(sampler.num_sampled / num_classes, 6),
        "sample scope": sampler.scope,
        "estimator": args.kd_estimator,
        "log-Q correction": args.log_q_correction,
        "temperature (T)": args.temperature,
        "KD divergence": args.kd_divergence,
        "alpha (hard-label CE weight)": args.alpha,
        "KD weight": args.kd_term_weight,
        "label smoothing": args.label_smoothing_factor,
        "label forced into S": sampler.force_label,
        "teacher top-m forced into S": sampler.force_teacher_topk,
        "uniform floor (eps)": sampler.eps,
    }
    if sampler.refit_every is not None:
        distillation["refit every (optimizer steps)"] = sampler.refit_every
    if trainer.sampler_choice is not None:
        distillation["sampler choice"] = trainer.sampler_choice
    if trainer.teacher_check is not None:
        distillation["teacher before training"] = trainer.teacher_check
    if cache is not None:
        views = "the un-augmented image" if cache["num_views"] is None else f"{cache['num_views']} augmented views"
        distillation["teacher logits"] = f"cached once: top {cache['top_r']:,} classes per example, on {views}"
    if trainer.resumed_changes:
        distillation["settings changed on resume"] = "; ".join(trainer.resumed_changes)
    if sampler.name == "full":
        kept = ("sampler", "sampler choice", "temperature (T)", "alpha (hard-label CE weight)", "KD weight",
                "label smoothing", "teacher logits", "teacher before training",
                "settings changed on resume")  # fmt: skip
        distillation = {key: value for key, value in distillation.items() if key in kept}
    train_log = _last_log(trainer, "train_runtime")
    speed: dict[str, Any] = {"device": device_name(args.device)}
    for key, name in SPEED_KEYS.items():
        if key in train_log:
            speed[name] = train_log[key]
    speed.update(head_step_times(trainer) if head_times is None else head_times)
    return StudentCardData(
        task="person-reidentification" if reid else "image-classification",
        model_name=model_name or (args.hub_model_id or Path(args.output_dir).name).split("/")[-1],
        student=student,
        teacher=teacher,
        distillation=distillation,
        training=_hyperparameters(trainer),
        results=_metrics(_last_log(trainer, "eval_runtime"), "eval_"),
        sampler_state=sampler.summary(),
        teacher_results=_teacher_results(args.teacher_model),
        speed=speed,
        reid=_reid_settings(args) if reid else {},
        dataset=dataset,
        license=license,
        language=language,
        tags=list(tags or []),
    )


def head_step_times(trainer: DistilledRun) -> dict[str, float]:
    """One step of the student's head and KD loss, over all classes and over the sampled ones, timed on the training
    device (milliseconds); empty for full KD, and for a classifier sharded over processes (one process's whole head
    is what such a run avoids holding)."""
    args, sampler = trainer.args, trainer.sampler
    if sampler.name == "full" or isinstance(trainer.student_head, ShardedLinear):
        return {}
    sizes = (trainer.student_head.out_features, trainer.student_head.in_features, args.per_device_train_batch_size)
    full = head_step_ms(*sizes, device=args.device, repeats=10)
    sampled = head_step_ms(*sizes, sampler, temperature=args.temperature, device=args.device, repeats=10)
    return {"head step, all classes (ms)": round(full, 3), "head step, sampled (ms)": round(sampled, 3)}


def _hyperparameters(trainer: DistilledRun) -> dict[str, Any]:
    args = trainer.args
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # Accelerate wraps it
    if hasattr(args, "lr_milestones"):  # a recipe's warm-up + multi-step schedule (hf_dis.recipes.optimization)
        schedule = f"x{args.lr_gamma} at epochs {args.lr_milestones}"
        if args.warmup_epochs:
            schedule = f"linear warm-up over {args.warmup_epochs} epochs from x{args.warmup_start_factor}, {schedule}"
    else:
        scheduler = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)  # not "SchedulerType.LINEAR"
        schedule = f"{scheduler}, {args.warmup_steps} warm-up steps"
    return {
        "optimizer": type(optimizer).__name__ if optimizer is not None else str(args.optim),
        "classifier updates": _classifier_updates(trainer),
        "learning rate": args.learning_rate,
        "schedule": schedule,
        "weight decay": args.weight_decay,
        "epochs": round(float(trainer.state.epoch or 0), 4),
        "optimizer steps": trainer.state.global_step,
        "batch size per device": args.per_device_train_batch_size,
        "processes": args.world_size,
        "gradient accumulation": args.gradient_accumulation_steps,
        "effective batch size": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "mixed precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
    }


def _classifier_updates(trainer: DistilledRun) -> str:
    """How the student's classifier was optimised: with the other parameters, or row-sparse (and how)."""
    optimizer = trainer.classifier_optimizer
    if optimizer is None:
        return "with the other parameters"
    row_wise = optimizer.param_groups[0].get("row_wise_second_moment", False)
    updates = f"{type(optimizer).__name__} on the sampled rows" + (", one second moment per row" if row_wise else "")
    head = trainer.student_head
    if isinstance(head, ShardedLinear):
        updates += f"; the classifier sharded over {head.shard.world_size} processes (classifier_parallel)"
    return updates


def _reid_settings(args: Any) -> dict[str, Any]:
    return {
        "identities per batch (P)": args.per_device_train_batch_size // args.instances_per_identity,
        "images per identity (K)": args.instances_per_identity,
        "triplet margin": "soft" if args.triplet_margin is None else args.triplet_margin,
        "triplet weight": args.triplet_weight,
        "retrieval distance": args.reid_distance,
        "embedding KD weight (similarity-preserving)": args.embedding_kd_weight,
    }


def _last_log(trainer: DistilledRun, key: str) -> dict[str, Any]:
    return next((entry for entry in reversed(trainer.state.log_history) if key in entry), {})


def _metrics(log: dict[str, Any], prefix: str) -> dict[str, float]:
    skip = ("runtime", "samples_per_second", "steps_per_second", "loss", "epoch")
    return {
        key.removeprefix(prefix): float(value)
        for key, value in log.items()
        if key.startswith(prefix) and isinstance(value, (int, float)) and not key.endswith(skip)
    }


def _teacher_results(teacher_model: Any) -> dict[str, float]:
    """The teacher's evaluation from its folder's eval_results.json (written by the recipes), when there is one."""
    if not isinstance(teacher_model, str):
        return {}
    path = Path(teacher_model) / "eval_results.json"
    return _metrics(json.loads(path.read_text()), "eval_") if path.is_file() else {}
