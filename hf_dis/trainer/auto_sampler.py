"""`sampler="auto"`: the timed choice between DIS and full KD, made once before training on the training device.

Both head steps are timed as the trainer runs them (`hf_dis.diagnostics.head_step_ms`): the student's classifier, the
KD loss, the backward and the classifier's update (the Trainer's optimizer over every row for full KD; for DIS the
row-sparse update when `classifier_optimizer="row_sparse"`, else the same dense one). DIS is chosen when its step
takes at most `AUTO_MAX_HEAD_RATIO` of the full step's time. `benchmarks/bench_crossover.py` checks the rule against
the head steps it measures over C, the feature width, the batch and K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_dis.diagnostics import head_step_ms
from hf_dis.sampling import ClassSampler
from hf_dis.trainer.arguments import AUTO_MAX_HEAD_RATIO

#: Timed head steps per candidate (the median is compared).
AUTO_REPEATS = 10


@dataclass(frozen=True)
class SamplerChoice:
    """What auto chose (`dis` or `full`) and the two median head steps (ms) it compared."""

    choice: str
    full_ms: float
    dis_ms: float

    def describe(self, num_classes: int, num_sampled: int, device: str | torch.device) -> str:
        """The one line a user sees: the choice, both times, and the rule."""
        return (
            f"auto chose {self.choice}: the head step took {self.dis_ms:.3g} ms with DIS (K = {num_sampled:,}) and "
            f"{self.full_ms:.3g} ms over all {num_classes:,} classes on {device} ({self.dis_ms / self.full_ms:.2f}x); "
            f"DIS is chosen at up to {AUTO_MAX_HEAD_RATIO:g}x"
        )


def choose(full_ms: float, dis_ms: float) -> str:
    """`dis` when its head step takes at most `AUTO_MAX_HEAD_RATIO` of the full one's, else `full`."""
    return "dis" if dis_ms <= AUTO_MAX_HEAD_RATIO * full_ms else "full"


def head_updates(optim: str, classifier_optimizer: str) -> tuple[str, str]:
    """The classifier updates (`hf_dis.diagnostics.HEAD_UPDATES`) of a full and of a DIS step under the Trainer's
    `optim` and `classifier_optimizer`: SGD for optim='sgd', AdamW otherwise; row-sparse for DIS when asked."""
    dense = "sgd" if str(getattr(optim, "value", optim)) == "sgd" else "adamw"
    return dense, f"row_sparse_{dense}" if classifier_optimizer == "row_sparse" else dense


def time_sampler_choice(
    num_classes: int,
    width: int,
    batch_size: int,
    dis_sampler: ClassSampler,
    *,
    temperature: float,
    device: str | torch.device,
    optim: str = "sgd",
    classifier_optimizer: str = "dense",
    repeats: int = AUTO_REPEATS,
) -> SamplerChoice:
    """Time the full and the DIS head steps (see the module docstring) and apply `choose`."""
    full_update, dis_update = head_updates(optim, classifier_optimizer)
    sizes = (num_classes, width, batch_size)
    options = dict(temperature=temperature, device=device, repeats=repeats)
    full_ms = head_step_ms(*sizes, update=full_update, **options)
    dis_ms = head_step_ms(*sizes, dis_sampler, update=dis_update, **options)
    return SamplerChoice(choose(full_ms, dis_ms), full_ms, dis_ms)
