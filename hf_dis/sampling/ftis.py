"""`ftis`: fixed teacher importance sampling. q = teacher softmax at a proposal temperature, with the eps floor.

"Fixed" because q depends on the teacher alone and never adapts to the student: the baseline the DIS paper beats.
"""

from __future__ import annotations

import torch

from hf_dis.data.cached_logits import TeacherLogits, as_dense
from hf_dis.sampling.base import ClassSampler, draw_from_proposal, with_floor
from hf_dis.sampling.options import check_temperature
from hf_dis.sampling.registry import register_sampler


@register_sampler
class FTISSampler(ClassSampler):
    """Args (besides the base sampler's):
    proposal_temperature: T_q of the proposal softmax; required. docs/method.md's default is the KD temperature T,
        which the sampler does not know: `DistillationArguments` passes T unless told otherwise.
    """

    name = "ftis"

    def __init__(self, num_classes: int, num_sampled: int, *, proposal_temperature: float, **options) -> None:
        super().__init__(num_classes, num_sampled, **options)
        check_temperature(proposal_temperature, "proposal_temperature")
        self.proposal_temperature = proposal_temperature

    def proposal(self, teacher_logits: TeacherLogits) -> torch.Tensor:
        """`[B, C]` per-example proposal q_b (float32)."""
        scaled = as_dense(teacher_logits).float() / self.proposal_temperature
        return with_floor(torch.softmax(scaled, dim=-1), self.eps)

    def _draw(
        self, teacher_logits: TeacherLogits, generator: torch.Generator, ranked_classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.proposal(teacher_logits)
        return draw_from_proposal(q if self.scope == "per_example" else q.mean(0), self.num_sampled, generator)
