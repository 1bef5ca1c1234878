"""Input checks shared by the losses and the samplers: each raises a ValueError that names the offending value.

Shape checks always run. Value checks (finite logits, labels in range, the label in the sampled set) read a result
back from the tensors' device: free on the CPU, but on an accelerator each one makes the host wait for the device to
finish everything queued before it, every step. So they run on CPU tensors, and on accelerator tensors only when the
environment sets `HF_DIS_CHECK_VALUES=1` (for hunting a NaN loss; out-of-range class ids still stop CUDA's indexing
kernels with a device-side assert). `HF_DIS_CHECK_VALUES=0` turns them off on the CPU too. The trainer checks the
training labels and the shape of the teacher's output once, before training starts, on any device.
"""

from __future__ import annotations

import os

import torch

#: 1: check values on accelerators too (one host-device synchronisation per check, every step); 0: nowhere.
CHECK_VALUES_VARIABLE = "HF_DIS_CHECK_VALUES"


class NonFiniteError(ValueError):
    """A NaN or an infinity where a finite value is required (the trainer turns it into a `DivergenceError` that
    names the step)."""


def values_checked(tensor: torch.Tensor) -> bool:
    """Whether to check `tensor`'s values: on the CPU unless `HF_DIS_CHECK_VALUES=0`, on an accelerator only under
    `HF_DIS_CHECK_VALUES=1`."""
    setting = os.environ.get(CHECK_VALUES_VARIABLE)
    return setting == "1" if setting in ("0", "1") else tensor.device.type == "cpu"


def check_temperature(temperature: float, name: str = "temperature") -> None:
    if not temperature > 0:
        raise ValueError(f"{name} must be > 0, got {temperature}.")


def check_num_sampled(num_sampled: int, num_classes: int) -> None:
    if isinstance(num_sampled, bool) or not isinstance(num_sampled, int) or not 0 < num_sampled <= num_classes:
        raise ValueError(f"num_sampled must be in [1, num_classes={num_classes}], got {num_sampled}.")


def check_logits(logits: torch.Tensor, name: str, num_classes: int | None = None) -> None:
    """2-D, with `num_classes` columns when given, and finite everywhere (see `values_checked`): one sum, which is
    finite when every entry is (NaN and inf propagate), and the entry-wise search only when it is not."""
    if logits.dim() != 2:
        raise ValueError(f"{name} must be 2-D [batch, classes], got shape {tuple(logits.shape)}.")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"{name} has {logits.shape[1]} classes, expected {num_classes}.")
    if values_checked(logits) and not bool(torch.isfinite(logits.sum())):
        non_finite = logits[~torch.isfinite(logits)]
        if non_finite.numel():  # else only the sum overflowed (large half-precision logits)
            raise NonFiniteError(
                f"{name} must be finite, found {non_finite[0].item()} (NaN/inf teacher or student outputs)."
            )


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
    if labels.numel() == 0 or not values_checked(labels):
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"labels must be in [0, {num_classes}), found {bad}.")
