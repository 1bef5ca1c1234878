"""A batch's teacher logits as the teacher cache stores them (`hf_dis.data.cache_teacher_logits`): each example's top
R classes in descending order of logit with their logits, and one logit shared by every other class. The samplers
and the sampled losses read it where they need the teacher's values on the sampled classes only, so that a cached
sampled step with many classes never forms the `[B, C]` teacher logits (at 10^6 classes and B = 128: 512 MB a step;
below `DENSE_LOOKUP_MAX_ENTRIES` forming them is the cheaper way); `dense_teacher_logits` forms them for the steps
that use every class (full KD, probes, evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _check_columns(top_classes: torch.Tensor, top_logits: torch.Tensor, tail_logit: torch.Tensor) -> None:
    if top_classes.dim() == 3:
        raise ValueError(
            "these cache columns hold several augmented views per example: read the dataset through "
            "hf_dis.data.labelled_batches(transform), which picks one view per example and remakes its image."
        )
    if top_classes.dim() != 2 or top_classes.shape != top_logits.shape or top_classes.shape[:1] != tail_logit.shape:
        raise ValueError(
            f"cache columns disagree: classes {tuple(top_classes.shape)}, logits {tuple(top_logits.shape)}, tail "
            f"{tuple(tail_logit.shape)}."
        )


def dense_teacher_logits(
    top_classes: torch.Tensor, top_logits: torch.Tensor, tail_logit: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """`[B, C]` float32 teacher logits from the cache columns (`[B, R]`, `[B, R]`, `[B]`): the top R exact, every
    other class at the tail logit."""
    _check_columns(top_classes, top_logits, tail_logit)
    logits = tail_logit.float().unsqueeze(1).expand(-1, num_classes).clone()
    return logits.scatter_(1, top_classes.long(), top_logits.float())


#: Up to this many `[B, C]` entries (32 MB of float32), `CachedTeacherLogits.at` forms the dense logits and gathers
#: from them: on a CPU that fill stays in cache and costs less than the sorted lookup; beyond it the fill's memory
#: traffic (and fresh pages) grow with C, while the lookup's cost does not (benchmarks/bench_cache_lookup.py).
DENSE_LOOKUP_MAX_ENTRIES = 2**23


@dataclass(frozen=True)
class CachedTeacherLogits:
    """The teacher logits of a batch of B examples over C classes, held as the cache columns: the values are those
    of `dense()`, without forming it.

    Attributes:
        top_classes: `[B, R]` class ids in descending order of logit (a ranking the samplers read as is).
        top_logits: `[B, R]` their logits.
        tail_logit: `[B]` the logit of every class outside the top R (-inf when R = C).
        num_classes: C.
    """

    top_classes: torch.Tensor
    top_logits: torch.Tensor
    tail_logit: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        _check_columns(self.top_classes, self.top_logits, self.tail_logit)
        if self.top_classes.shape[1] > self.num_classes:
            raise ValueError(f"the cache holds {self.top_classes.shape[1]} classes per example, more than C.")

    @property
    def shape(self) -> torch.Size:
        """`[B, C]`: the shape of the dense logits."""
        return torch.Size((self.top_classes.shape[0], self.num_classes))

    @property
    def device(self) -> torch.device:
        return self.top_logits.device

    def to(self, device: torch.device | str) -> CachedTeacherLogits:
        """On `device`, class ids as int64 and logits as float32 (what the losses compute in)."""
        return CachedTeacherLogits(
            self.top_classes.to(device, torch.long),
            self.top_logits.to(device, torch.float32),
            self.tail_logit.to(device, torch.float32),
            self.num_classes,
        )

    def dense(self) -> torch.Tensor:
        """`[B, C]` float32 logits (`dense_teacher_logits`)."""
        return dense_teacher_logits(self.top_classes, self.top_logits, self.tail_logit, self.num_classes)

    def at(self, classes: torch.Tensor) -> torch.Tensor:
        """`[B, K']` float32 logits at `classes` (`[B, K']`, or `[K']` for one set shared by the batch), equal to
        `dense().gather(1, classes)`: gathered from `dense()` up to `DENSE_LOOKUP_MAX_ENTRIES` dense entries, read
        by `lookup` beyond."""
        classes = classes.expand(self.top_classes.shape[0], -1)
        if classes.shape[0] * self.num_classes <= DENSE_LOOKUP_MAX_ENTRIES:
            return self.dense().gather(1, classes)
        return self.lookup(classes)

    def lookup(self, classes: torch.Tensor) -> torch.Tensor:
        """`at` without forming the dense logits, at a cost that does not grow with C: each row's top classes sorted
        once (one flat sort of B x R ids, offset by C per row), each class looked up in its row by binary search,
        the tail logit where it is not found."""
        batch_size, num_ranked = self.top_classes.shape
        classes = classes.expand(batch_size, -1)
        offsets = torch.arange(batch_size, device=classes.device).unsqueeze(1) * self.num_classes
        key = torch.int32 if batch_size * self.num_classes <= torch.iinfo(torch.int32).max else torch.int64
        ranked, order = (self.top_classes + offsets).to(key).flatten().sort()  # int32 sorts about twice as fast
        wanted = (classes + offsets).to(key).flatten()
        positions = torch.searchsorted(ranked, wanted).clamp_(max=batch_size * num_ranked - 1)
        found = ranked[positions] == wanted
        values = self.top_logits.float().flatten()[order[positions]]
        tail = self.tail_logit.float().unsqueeze(1).expand_as(classes).flatten()
        return torch.where(found, values, tail).view(classes.shape)

    def log_partition(self, temperature: float) -> torch.Tensor:
        """`[B]` logsumexp over all C of z / T: the top R's terms and C - R times the tail's."""
        scaled = self.top_logits.float() / temperature
        num_tail = self.num_classes - self.top_classes.shape[1]
        if num_tail == 0:
            return torch.logsumexp(scaled, dim=-1)
        tail = self.tail_logit.float().unsqueeze(1) / temperature + math.log(num_tail)
        return torch.logsumexp(torch.cat([scaled, tail], dim=-1), dim=-1)


#: Teacher logits as a step receives them: dense `[B, C]`, or a batch's cache columns.
TeacherLogits = torch.Tensor | CachedTeacherLogits


def as_dense(teacher_logits: TeacherLogits) -> torch.Tensor:
    """`[B, C]` teacher logits, formed from the cache columns where they are held that way."""
    return teacher_logits.dense() if isinstance(teacher_logits, CachedTeacherLogits) else teacher_logits
