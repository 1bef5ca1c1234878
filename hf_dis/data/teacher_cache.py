"""Teacher cache: run the teacher once over a dataset and keep what distillation needs as `datasets` columns next to
the data, so that training reads the teacher's logits instead of running the teacher.

Per example, the cache holds the teacher's top-R classes and their logits (`teacher_top_classes`,
`teacher_top_logits`) and one value for all the other classes (`teacher_tail_logit`): the log of their mean
exp(logit), so that the tail keeps its total probability at temperature 1. `dense_teacher_logits` rebuilds `[B, C]`
logits from them: exact with R = C; with R < C the tail classes share one logit **[choice]**, which keeps the ranks
DIS draws from (the top R are exact) and the teacher's mass outside them, but not how that mass spreads.

What it is computed on: the image as `transform` makes it, once. Use the evaluation transform (no augmentation): the
student then trains on augmented images against the teacher's view of the clean image (a known trade of offline
distillation), and `DistillationTrainer` uses the cached columns whenever a training batch carries them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import datasets
import torch
from torch import nn

TOP_CLASSES, TOP_LOGITS, TAIL_LOGIT = "teacher_top_classes", "teacher_top_logits", "teacher_tail_logit"
TEACHER_CACHE_COLUMNS = (TOP_CLASSES, TOP_LOGITS, TAIL_LOGIT)


@torch.no_grad()
def cache_teacher_logits(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    transform: Callable,
    *,
    top_r: int,
    batch_size: int = 256,
    image_column: str = "image",
    device: str | torch.device | None = None,
) -> datasets.Dataset:
    """`dataset` with the three cache columns (the teacher in eval mode, on `device`, default its own).

    Args:
        teacher: a classifier returning `[B, C]` logits (a tensor or an output with `.logits`).
        transform: image -> `[3, H, W]` tensor, as the student's inputs are made (without augmentation).
        top_r: R, classes kept exactly per example (at least the DIS sampler's rank limit to draw as from the live
            teacher); R = C keeps everything.
    """
    if top_r < 1:
        raise ValueError(f"top_r must be >= 1, got {top_r}.")
    teacher = teacher.eval()
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    teacher.to(device)

    def add_columns(batch: dict[str, list]) -> dict[str, list]:
        pixels = torch.stack([transform(image) for image in batch[image_column]]).to(device)
        outputs = teacher(pixels)
        logits = (outputs if isinstance(outputs, torch.Tensor) else outputs.logits).float()
        num_classes = logits.shape[1]
        if top_r > num_classes:
            raise ValueError(f"top_r={top_r} is more than the teacher's {num_classes} classes.")
        top = logits.topk(top_r, dim=1)
        tail = logits.scatter(1, top.indices, float("-inf"))
        if top_r < num_classes:
            tail_logit = torch.logsumexp(tail, dim=1) - math.log(num_classes - top_r)
        else:
            tail_logit = torch.full((logits.shape[0],), float("-inf"), device=device)
        return {
            TOP_CLASSES: top.indices.int().cpu().tolist(),
            TOP_LOGITS: top.values.cpu().tolist(),
            TAIL_LOGIT: tail_logit.cpu().tolist(),
        }

    features = dataset.features.copy()
    features[TOP_CLASSES] = datasets.Sequence(datasets.Value("int32"), length=top_r)
    features[TOP_LOGITS] = datasets.Sequence(datasets.Value("float32"), length=top_r)
    features[TAIL_LOGIT] = datasets.Value("float32")
    return dataset.map(
        add_columns, batched=True, batch_size=batch_size, features=features, desc="Caching the teacher's logits"
    )


def dense_teacher_logits(
    top_classes: torch.Tensor, top_logits: torch.Tensor, tail_logit: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """`[B, C]` float32 teacher logits from the cache columns (`[B, R]`, `[B, R]`, `[B]`): the top R exact, every
    other class at the tail logit."""
    if top_classes.shape != top_logits.shape or top_classes.shape[:1] != tail_logit.shape:
        raise ValueError(
            f"cache columns disagree: classes {tuple(top_classes.shape)}, logits {tuple(top_logits.shape)}, tail "
            f"{tuple(tail_logit.shape)}."
        )
    logits = tail_logit.float().unsqueeze(1).expand(-1, num_classes).clone()
    return logits.scatter_(1, top_classes.long(), top_logits.float())
