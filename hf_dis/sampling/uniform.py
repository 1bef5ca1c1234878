"""`uniform`: every class equally likely (q = 1 / C); the "other sampling methods" baseline."""

from __future__ import annotations

import torch

from hf_dis.data.cached_logits import TeacherLogits
from hf_dis.sampling.base import ClassSampler, inclusion_log_prob
from hf_dis.sampling.registry import register_sampler


@register_sampler
class UniformSampler(ClassSampler):
    """Uniform proposal. The eps floor changes nothing here (uniform mixed with uniform)."""

    name = "uniform"

    def __init__(self, num_classes: int, num_sampled: int, **options) -> None:
        super().__init__(num_classes, num_sampled, **options)
        #: every class's log pi, the same on every step (computed in float32, as a drawn set's log pi is)
        self._log_pi = float(inclusion_log_prob(torch.tensor(1.0 / num_classes), num_sampled))

    def _draw(
        self, teacher_logits: TeacherLogits, generator: torch.Generator, ranked_classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (teacher_logits.shape[0], self.num_sampled) if self.scope == "per_example" else (self.num_sampled,)
        device = teacher_logits.device
        classes = torch.randint(self.num_classes, shape, generator=generator, device=device)
        return classes, torch.full(shape, self._log_pi, device=device)
