"""`full`: S is every class. The reference: with it the sampled estimators equal classic Hinton KD exactly."""

from __future__ import annotations

import torch

from hf_dis.data.cached_logits import TeacherLogits
from hf_dis.sampling.base import ClassSampler, SampledClasses
from hf_dis.sampling.registry import register_sampler


@register_sampler
class FullSampler(ClassSampler):
    name = "full"

    def __init__(self, num_classes: int, num_sampled: int | None = None, **options) -> None:
        if num_sampled is not None and num_sampled != num_classes:
            raise ValueError(
                f"the full sampler uses all {num_classes} classes; got num_sampled={num_sampled} (pass None)."
            )
        super().__init__(num_classes, num_classes, **options)

    def ranks_read(self) -> int:
        return 0  # every class, no ranking

    def sample(
        self,
        teacher_logits: TeacherLogits,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        ranked_classes: torch.Tensor | None = None,
    ) -> SampledClasses:
        self._check_inputs(teacher_logits, labels)
        return self._all_classes(teacher_logits)
