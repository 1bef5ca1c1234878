"""`topk`: the teacher's K highest classes, deterministically, with no correction (pi = 1).

Common practice and known to be biased: classes outside the teacher's top-K never get a gradient, so the student's
full-softmax accuracy can collapse. Kept as the biased baseline.
"""

from __future__ import annotations

import torch

from hf_dis.data.cached_logits import TeacherLogits, as_dense
from hf_dis.sampling.base import ClassSampler
from hf_dis.sampling.options import check_temperature
from hf_dis.sampling.registry import register_sampler


@register_sampler
class TopKSampler(ClassSampler):
    """Per example: the teacher's top-K logits. Batch scope: the top-K of the batch-averaged teacher softmax at
    `proposal_temperature` (required, as for ftis: `DistillationArguments` passes the KD temperature T unless told
    otherwise). `eps` has no effect (nothing is drawn)."""

    name = "topk"

    def __init__(self, num_classes: int, num_sampled: int, *, proposal_temperature: float, **options) -> None:
        super().__init__(num_classes, num_sampled, **options)
        check_temperature(proposal_temperature, "proposal_temperature")
        self.proposal_temperature = proposal_temperature

    def _ranks_drawn_from(self) -> int:
        return self.num_sampled if self.scope == "per_example" else 0

    def _draw(
        self, teacher_logits: TeacherLogits, generator: torch.Generator, ranked_classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scope == "per_example":
            classes = ranked_classes[:, : self.num_sampled]
        else:
            batch_q = torch.softmax(as_dense(teacher_logits).float() / self.proposal_temperature, dim=-1).mean(0)
            classes = batch_q.topk(self.num_sampled).indices
        return classes, torch.zeros(classes.shape, device=classes.device)
