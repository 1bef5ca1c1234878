"""`uniform`: every class equally likely (q = 1 / C); the "other sampling methods" baseline."""

from __future__ import annotations

import torch

from hf_dis.sampling.base import ClassSampler, inclusion_log_prob
from hf_dis.sampling.registry import register_sampler


@register_sampler
class UniformSampler(ClassSampler):
    """Uniform proposal. The eps floor changes nothing here (uniform mixed with uniform)."""

    name = "uniform"

    def _draw(
        self, teacher_logits: torch.Tensor, generator: torch.Generator, ranked_classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (teacher_logits.shape[0], self.num_sampled) if self.scope == "per_example" else (self.num_sampled,)
        device = teacher_logits.device
        classes = torch.randint(self.num_classes, shape, generator=generator, device=device)
        q = torch.full(shape, 1.0 / self.num_classes, device=device)
        return classes, inclusion_log_prob(q, self.num_sampled)
