"""Diagnostics of the sampled KD estimators: how far the mean sampled gradient is from the full one (Monte Carlo),
what one sampled set covers (teacher mass, effective sample size), which the trainer logs, and what the sampled head
costs against the full one (`head_step_ms`, reported in model cards and by the quickstart; `median_step_ms` is
the timing the benchmarks share), how many operators a step dispatches (`OperatorCounter`: kernel launches on an
accelerator) and which of them would make the host wait for it (`host_sync_ops`, checked on any device).

`sampled_gradient_error` is used by the test suite and by `benchmarks/estimator_bias.py`; it helps pick K for a new
task (run it on a batch of real teacher and student logits).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hf_dis.data.cached_logits import CachedTeacherLogits, TeacherLogits
from hf_dis.heads import RowSparseAdamW, RowSparseSGD, subset_logits
from hf_dis.losses import kd_loss, logits_at, sampled_distillation_loss
from hf_dis.losses.distillation import teacher_log_partition, teacher_logits_at
from hf_dis.sampling import ClassSampler, SampledClasses


@dataclass(frozen=True)
class GradientError:
    """`relative_error`: ||mean sampled gradient - full gradient|| / ||full gradient||, over the student logits.
    `relative_std`: ||per-draw standard deviation|| / ||full gradient|| (the error of one draw, around its mean)."""

    relative_error: float
    relative_std: float
    num_repeats: int


def _logit_gradient(loss_fn, student_logits: torch.Tensor) -> torch.Tensor:
    student = student_logits.detach().clone().requires_grad_(True)
    loss_fn(student).backward()
    return student.grad


def sampled_gradient_error(
    sampler: ClassSampler,
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    temperature: float,
    *,
    labels: torch.Tensor | None = None,
    num_repeats: int = 1000,
    estimator: str = "self_normalized",
    log_q_correction: bool = True,
    generator: torch.Generator | None = None,
) -> GradientError:
    """Compare the sampled KD gradient with respect to the student's logits, averaged over `num_repeats` draws of
    S, with the full KD gradient.

    In the per-example scope the repeats run as one batch (the batch tiled `num_repeats` times: every row draws its
    own S independently); in the batch scope they run one after the other.
    """
    batch_size = teacher_logits.shape[0]
    full = _logit_gradient(lambda s: kd_loss(s, teacher_logits, temperature), student_logits)

    def sampled_loss(student: torch.Tensor, teacher: torch.Tensor, labels_: torch.Tensor | None) -> torch.Tensor:
        drawn = sampler.sample(teacher, labels_, generator=generator)
        student_S = logits_at(student, drawn.classes)
        return sampled_distillation_loss(
            student_S, teacher, drawn, None, temperature, 0.0, estimator=estimator, log_q_correction=log_q_correction
        ).kd_loss

    if sampler.scope == "per_example":
        tile = lambda x: None if x is None else x.repeat(num_repeats, *([1] * (x.dim() - 1)))  # noqa: E731
        teacher, labels_ = tile(teacher_logits), tile(labels)
        grads = _logit_gradient(lambda s: sampled_loss(s, teacher, labels_), tile(student_logits))
        # The tiled loss averages over num_repeats * B rows: rescale each row's gradient to a B-row batch mean.
        grads = grads.view(num_repeats, batch_size, -1) * num_repeats
    else:
        grads = torch.stack(
            [
                _logit_gradient(lambda s: sampled_loss(s, teacher_logits, labels), student_logits)
                for _ in range(num_repeats)
            ]
        )
    scale = full.norm()
    return GradientError(
        relative_error=float((grads.mean(0) - full).norm() / scale),
        relative_std=float(grads.std(0).norm() / scale),
        num_repeats=num_repeats,
    )


#: The sampled-set statistics read at most this many of the teacher's logits per call: with many classes they are
#: computed on the batch's first `STATS_MAX_ENTRIES // C` examples (at least one), whose mean estimates the batch's.
STATS_MAX_ENTRIES = 2**24


def sampled_set_stats(
    teacher_logits: TeacherLogits, drawn: SampledClasses, temperature: float, *, log_q_correction: bool = True
) -> dict[str, torch.Tensor]:
    """What a sampled set holds, averaged over the batch (0-dim tensors, so that no device sync happens here); with
    more than `STATS_MAX_ENTRIES` dense teacher logits, averaged over the batch's first examples only (so that a
    logging diagnostic never costs a float32 copy of the `[B, C]` logits at 10^6 classes; cache columns are read
    whole, without forming them).

    - ``teacher_mass``: sum of the teacher's probabilities softmax(z_t / T) over the distinct classes of S (1 when S
      covers everything the teacher believes).
    - ``ess``: effective sample size 1 / sum_j w_j^2 of the self-normalised target weights w = softmax_S(a_t), with
      a_t = z_t / T - log pi when `log_q_correction` (between 1 and K'; low values mean a few classes carry it all).
    - ``num_classes``: distinct classes in S per example.
    """
    if not isinstance(teacher_logits, CachedTeacherLogits):
        rows = max(1, min(teacher_logits.shape[0], STATS_MAX_ENTRIES // teacher_logits.shape[1]))
        teacher_logits = teacher_logits[:rows].detach()
        if drawn.classes.dim() == 2:
            drawn = SampledClasses(drawn.classes[:rows], drawn.log_pi[:rows], drawn.mask[:rows])
    scaled_S = teacher_logits_at(teacher_logits, drawn.classes).float() / temperature
    keep = ~drawn.mask.expand(scaled_S.shape[0], -1)
    # p_t on S only, from the log-partition: the [B, C] probabilities are not materialised on every logged step.
    teacher_mass = ((scaled_S - teacher_log_partition(teacher_logits, temperature).unsqueeze(-1)).exp() * keep).sum(-1)
    a_t = scaled_S - drawn.log_pi.float() if log_q_correction else scaled_S
    weights = torch.softmax(a_t.masked_fill(~keep, float("-inf")), dim=-1)
    return {
        "teacher_mass": teacher_mass.mean(),
        "ess": (1.0 / weights.square().sum(-1)).mean(),
        "num_classes": keep.sum(-1).float().mean(),
    }


#: The classifier updates `head_step_ms` can time: a dense optimizer over all C rows, or a row-sparse one over the
#: sampled rows (`classifier_optimizer="row_sparse"`), each as SGD with momentum or AdamW.
HEAD_UPDATES = ("sgd", "adamw", "row_sparse_sgd", "row_sparse_adamw")


def head_step_ms(
    num_classes: int,
    width: int,
    batch_size: int,
    sampler: ClassSampler | None = None,
    *,
    temperature: float = 2.0,
    device: str | torch.device = "cpu",
    repeats: int = 20,
    update: str | None = None,
) -> float:
    """Median wall time (milliseconds) of one step of a `width -> num_classes` linear head on random inputs: forward,
    KD loss and backward, over all classes or over the classes `sampler` draws (drawing included), then, with
    `update` (one of `HEAD_UPDATES`), the classifier's optimizer step. What the sampling saves per step, on this
    device, for a head of this size."""
    if update is not None and update not in HEAD_UPDATES:
        raise ValueError(f"update must be one of {list(HEAD_UPDATES)} or None, got {update!r}.")
    if update is not None and update.startswith("row_sparse") and sampler is None:
        raise ValueError("a row-sparse update needs a sampler: over all classes every row is updated.")
    generator = torch.Generator(device=device).manual_seed(0)
    head = torch.nn.Linear(width, num_classes, device=device)
    features = torch.randn(batch_size, width, device=device, generator=generator, requires_grad=True)
    teacher_logits = torch.randn(batch_size, num_classes, device=device, generator=generator)
    optimizer = None if update is None else _head_optimizer(update, head)
    sparse_grad = update is not None and update.startswith("row_sparse")

    def step() -> None:
        if sampler is None:
            loss = kd_loss(head(features), teacher_logits, temperature)
        else:
            drawn = sampler.sample(teacher_logits, generator=generator)
            student_S = subset_logits(features, head, drawn.classes, sparse_grad=sparse_grad)
            loss = sampled_distillation_loss(student_S, teacher_logits, drawn, None, temperature, 0.0).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return median_step_ms(step, device, repeats, warmup=1)


def _head_optimizer(update: str, head: torch.nn.Linear) -> torch.optim.Optimizer:
    kind = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "row_sparse_sgd": RowSparseSGD,
            "row_sparse_adamw": RowSparseAdamW}[update]  # fmt: skip
    options = {"momentum": 0.9} if update.endswith("sgd") else {}
    return kind(head.parameters(), lr=1e-3, **options)


def median_step_ms(step: Callable[[], None], device: str | torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time (milliseconds) of `step()` over `repeats` calls after `warmup` untimed ones, waiting for the
    GPU to finish each call when `device` is CUDA."""
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


#: ATen operators that make the host wait for an accelerator: they hand a value back to Python (`.item()`,
#: `bool(tensor)`, `torch.equal`) or their output's size depends on the data (unique, nonzero, boolean masks, sparse
#: coalescing), so the host must wait for every kernel queued before them.
HOST_SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "equal",
        "is_nonzero",
        "nonzero",
        "masked_select",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "_coalesce",
        "repeat_interleave",
    }  # fmt: skip
)


class OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while it is active, by name (`counts`; `total`). On an accelerator every
    one but a view launches a kernel, so where the host's launches bound a step (small models, small images) this
    count is what the step costs. A `repeat_interleave` given its `output_size` is counted as
    `repeat_interleave(output_size)`: unlike the plain one, it need not wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "repeat_interleave" and (kwargs or {}).get("output_size"):
            name = "repeat_interleave(output_size)"
        self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def host_sync_ops(step: Callable[[], None]) -> Counter[str]:
    """The operators of `HOST_SYNC_OPS` that `step()` runs (in its forward, its backward and anything else it calls),
    counted by name: each would make the host wait for the device were the tensors on an accelerator. Runs on any
    device, the CPU included, so a test can keep a step free of them. Reads of tensors that live on the host anyway
    (a CPU step counter of a torch optimizer) are counted too."""
    with OperatorCounter() as counter:
        step()
    return Counter({name: count for name, count in counter.counts.items() if name in HOST_SYNC_OPS})
