"""Input checks shared by the losses and the samplers: each raises a ValueError that names the offending value."""

from __future__ import annotations

import torch


def check_temperature(temperature: float, name: str = "temperature") -> None:
    if not temperature > 0:
        raise ValueError(f"{name} must be > 0, got {temperature}.")


def check_num_sampled(num_sampled: int, num_classes: int) -> None:
    if isinstance(num_sampled, bool) or not isinstance(num_sampled, int) or not 0 < num_sampled <= num_classes:
        raise ValueError(f"num_sampled must be in [1, num_classes={num_classes}], got {num_sampled}.")


def check_logits(logits: torch.Tensor, name: str, num_classes: int | None = None) -> None:
    """2-D, with `num_classes` columns when given, and finite everywhere (one reduction, no copy)."""
    if logits.dim() != 2:
        raise ValueError(f"{name} must be 2-D [batch, classes], got shape {tuple(logits.shape)}.")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"{name} has {logits.shape[1]} classes, expected {num_classes}.")
    if not bool(torch.isfinite(logits).all()):
        bad = logits[~torch.isfinite(logits)][0].item()
        raise ValueError(f"{name} must be finite, found {bad} (NaN/inf teacher or student outputs).")


def check_same_classes(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} must have the same "
            f"shape: the teacher and the student must predict the same classes (got {student.shape[-1]} and "
            f"{teacher.shape[-1]})."
        )


def check_labels(labels: torch.Tensor, batch_size: int, num_classes: int) -> None:
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}.")
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"labels must be in [0, {num_classes}), found {bad}.")
