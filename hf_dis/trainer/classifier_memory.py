"""Whether the classifier's training state fits in the memory left, estimated before the first step.

At 10^6 classes the classifier's gradient, its optimizer state and a batch's `[B, C]` logits (the student's, the
teacher's, and their softmax and backward) take gigabytes beyond the weights themselves; running out of them shows
up as the allocator's message after checkpoints may have been written. `check_classifier_fits` compares an estimate
with the memory free on the device (CUDA) or the machine (CPU) and refuses a run that cannot fit, naming the
options that shrink it.
"""

from __future__ import annotations

import psutil
import torch

#: `[B, C]` float32 tensors a full step holds at its peak: student and teacher logits, their (log-)softmax and the
#: backward's gradient of the logits.
FULL_STEP_LOGIT_TENSORS = 6


def classifier_training_bytes(
    num_classes: int, width: int, batch_size: int, *, optimizer_states: int, full_steps: bool, dense_update: bool
) -> dict[str, int]:
    """The memory a step needs for the classifier beyond its weights, by part (bytes, float32)."""
    rows = num_classes * width * 4
    parts = {"optimizer state": optimizer_states * rows if dense_update else 0, "gradient": rows}
    if full_steps:
        parts["[B, C] logits of a full step"] = FULL_STEP_LOGIT_TENSORS * batch_size * num_classes * 4
    return parts


def free_memory_bytes(device: torch.device) -> int:
    """Memory free for tensors on `device`: the CUDA allocator's free memory, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_classifier_fits(parts: dict[str, int], free: int, num_classes: int) -> None:
    """Refuse a run whose classifier state (`classifier_training_bytes`) exceeds `free` bytes.

    Raises:
        MemoryError: with the estimate by part and the options that shrink it.
    """
    needed = sum(parts.values())
    if needed <= free:
        return
    detail = ", ".join(f"{name} {size / 2**30:.1f} GiB" for name, size in parts.items() if size)
    raise MemoryError(
        f"the {num_classes:,}-class classifier needs about {needed / 2**30:.1f} GiB beyond its weights ({detail}), "
        f"and {free / 2**30:.1f} GiB is free. To shrink it: classifier_optimizer='row_sparse' (no optimizer state "
        "or gradient for unsampled rows), sampler='dis' (no [B, C] logits on sampled steps), a smaller "
        "per_device_train_batch_size, or classifier_parallel=True under accelerate launch (the rows split over "
        "processes)."
    )
