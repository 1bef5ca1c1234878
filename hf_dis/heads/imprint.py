"""Weight imprinting: a linear classifier's rows set from class-mean features (Qi, Brown and Lowe, CVPR 2018), with
one scale fitted to the training examples.

Row c becomes `s * u_c`, with `u_c = normalise(m_c - m)` (`m_c` the mean feature of class c, `m` the mean over every
example), and its bias `-s * u_c . m`: the logits are `s * u_c . (f - m)`, so the head ranks the classes by the cosine
of the centred feature to each class's centred mean. A class with no example keeps its row. The scale `s` minimises
the leave-one-out cross-entropy on a sample of training features (each example scored against its own class's mean
without itself), so that the logits are neither flat nor overconfident when a class has a few examples only.

Why: with 10^5 classes and a few images each, a softmax head lags its own features (a row learns from its class's few
images only), while the same features' class means already rank the classes well (docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: The leave-one-out fit scores a sample of examples against every class: at most this many logits at once.
FIT_LOGITS = 25_000_000


@dataclass
class ClassFeatureSums:
    """Per-class sums of features (`sums`, `[C, d]`) and example counts (`counts`, `[C]`), in float64: what
    `imprint` needs, added to batch by batch (and summed across processes by the caller)."""

    sums: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, dim: int, device: torch.device | str | None = None) -> ClassFeatureSums:
        return cls(
            torch.zeros(num_classes, dim, dtype=torch.float64, device=device),
            torch.zeros(num_classes, dtype=torch.float64, device=device),
        )

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: `features` `[B, d]`, `labels` `[B]` (class indices)."""
        self.sums.index_add_(0, labels, features.to(self.sums.dtype))
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=self.counts.dtype))


def fit_sample_size(num_classes: int) -> int:
    """How many examples the scale is fitted on: as many as keep `[n, C]` logits within `FIT_LOGITS` (64 to 4,096)."""
    return max(64, min(4096, FIT_LOGITS // max(num_classes, 1)))


def imprinted_directions(stats: ClassFeatureSums) -> tuple[torch.Tensor, torch.Tensor]:
    """`(u, m)`: each class's unit direction `normalise(m_c - m)` (`[C, d]`, float32; zero for a class with no
    example) and the mean feature `m` (`[d]`)."""
    total = stats.counts.sum()
    if total == 0:
        raise ValueError("no example was added: the class means are undefined.")
    center = stats.sums.sum(0) / total
    means = stats.sums / stats.counts.clamp_min(1)[:, None]
    directions = F.normalize(means - center, dim=1) * (stats.counts > 0)[:, None]
    return directions.float(), center.float()


def leave_one_out_logits(
    features: torch.Tensor, labels: torch.Tensor, stats: ClassFeatureSums, directions: torch.Tensor,
    center: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Unscaled imprinted logits `u_c . (f - m)` of `features` (`[n, d]`) at every class with an example, each
    example's own class scored against its class mean without it: `(logits [n', C'], targets [n'])`, over the
    examples whose class has another example (n') and the classes with an example (C')."""
    counts = stats.counts[labels]
    keep = counts > 1
    features, labels, counts = features[keep].double(), labels[keep], counts[keep]
    centred = features - center.double()
    logits = centred.float() @ directions.T
    others = (stats.sums[labels] - features) / (counts - 1)[:, None]
    own = (F.normalize(others - center.double(), dim=1) * centred).sum(1).float()
    logits[torch.arange(len(labels), device=logits.device), labels] = own
    present = stats.counts > 0
    kept_index = torch.cumsum(present, 0) - 1
    return logits[:, present], kept_index[labels]


def fit_scale(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The scale `s > 0` that minimises `cross_entropy(s * logits, targets)` (convex in `s`): a log-spaced grid from
    1e-2 to 1e4, then a finer one around its best point."""
    if len(targets) == 0:
        raise ValueError("no example to fit the scale on: every sampled example is its class's only one.")

    def best(scales: torch.Tensor) -> int:
        losses = torch.stack([F.cross_entropy(scale * logits, targets) for scale in scales.tolist()])
        return int(losses.argmin())

    coarse = torch.logspace(-2, 4, 61)
    index = best(coarse)
    low, high = coarse[max(index - 1, 0)], coarse[min(index + 1, len(coarse) - 1)]
    fine = torch.logspace(float(low.log10()), float(high.log10()), 41)
    return float(fine[best(fine)])


@dataclass(frozen=True)
class ImprintFit:
    """The fitted scale, and the leave-one-out top-1 of the imprinted head on the `examples` it was fitted on."""

    scale: float
    top1: float
    examples: int


def fit_imprint(stats: ClassFeatureSums, sample_features: torch.Tensor, sample_labels: torch.Tensor) -> ImprintFit:
    """Fit the scale of the imprinted logits on a sample of training features (`[n, d]`, labels `[n]`; see the module
    docstring)."""
    directions, center = imprinted_directions(stats)
    device = sample_features.device
    logits, targets = leave_one_out_logits(
        sample_features, sample_labels.to(device), _on(stats, device), directions.to(device), center.to(device)
    )
    top1 = float((logits.argmax(1) == targets).float().mean()) if len(targets) else float("nan")
    return ImprintFit(fit_scale(logits, targets), top1, len(targets))


def set_imprinted_rows(head: nn.Linear, stats: ClassFeatureSums, scale: float) -> None:
    """Set `head`'s rows to `scale * u_c` and its bias to `-scale * u_c . m` (see the module docstring); a class with
    no example keeps its row and bias. The head must have a bias."""
    if head.bias is None:
        raise ValueError("imprinting sets the bias to -s * u_c . m: the classifier must have a bias.")
    if stats.sums.shape != head.weight.shape:
        raise ValueError(f"the class sums are {tuple(stats.sums.shape)}, the classifier {tuple(head.weight.shape)}.")
    directions, center = imprinted_directions(stats)
    device = head.weight.device
    directions, center, present = directions.to(device), center.to(device), (stats.counts > 0).to(device)
    with torch.no_grad():
        head.weight[present] = (scale * directions[present]).to(head.weight.dtype)
        head.bias[present] = (-scale * directions[present] @ center).to(head.bias.dtype)


def _on(stats: ClassFeatureSums, device: torch.device) -> ClassFeatureSums:
    return ClassFeatureSums(stats.sums.to(device), stats.counts.to(device))
