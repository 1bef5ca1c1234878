"""The student's classifier split over the processes of a run (model parallelism of the last layer, as Partial FC
shards a face-recognition classifier), for classifiers too large for one device: each process owns a contiguous
range of the C classes (`ClassShard`), its rows of the weight and bias, and their optimizer state.

A step, on every process: the features of every process's batch are gathered (`gather_features`: `[N B, d]`); each
process computes the logits of the classes it owns, at the sampled classes of every example
(`sharded_subset_logits`) or over its whole range (`[N B, C / N]`); the pieces are assembled across processes by
sums (`sum_over_processes`: the sampled logits themselves, which are few, or the max and the sum of exponentials of
a softmax over all C: `sharded_logsumexp`), so that every process computes the same loss over the whole batch, and
no process ever holds `[N B, C]` logits. The losses over all classes, and top-k predictions, are assembled the same
way (`sharded_kd_loss`, `sharded_cross_entropy`, `sharded_topk`).

Gradients. Every process computes the same loss L from the same sums, so the backward of a sum passes the gradient
on as it is, and each process's logits get their exact gradient (which holds as long as what is the same on every
process, such as a log-partition, enters the loss after the sums, never inside a process's part): its rows of the
weight get theirs, and so does the `[N B, d]` block of gathered features, though only through the process's own
rows. The gradient of a process's own features is the sum of those blocks over processes at its examples
(`gather_features`' backward). Under DDP, which averages the backbone's gradients over the N processes instead of
summing them, pass `grad_scale=N` so that the average equals what one process with the whole batch would compute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hf_dis.heads.sampled_linear import ClassRestriction
from hf_dis.heads.split import split_classifier


@dataclass(frozen=True)
class ClassShard:
    """The classes one process owns: `[start, stop)` of C, contiguous; the first C mod N processes own one more
    (the split of `torch.tensor_split`)."""

    num_classes: int
    start: int
    stop: int
    rank: int
    world_size: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def class_shard(num_classes: int, rank: int, world_size: int) -> ClassShard:
    """The classes process `rank` of `world_size` owns."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
    if num_classes < world_size:
        raise ValueError(
            f"{num_classes} classes cannot be sharded over {world_size} processes: each process must own at least one "
            "class (run with fewer processes, or without sharding the classifier)."
        )
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return ClassShard(num_classes, start, start + base + (rank < extra), rank, world_size)


def _world_size(group: dist.ProcessGroup | None) -> int:
    return dist.get_world_size(group)


def gather_from_processes(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Every process's `tensor` (the same shape on each) concatenated along dim 0 in rank order; no gradient."""
    parts = [torch.empty_like(tensor) for _ in range(_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts)


class _GatherFeatures(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, group: dist.ProcessGroup | None, grad_scale: float) -> torch.Tensor:
        ctx.group, ctx.grad_scale, ctx.batch = group, grad_scale, features.shape[0]
        ctx.rank = dist.get_rank(group)
        return gather_from_processes(features, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)  # every process's share of the gradient (gloo has no reduce-scatter)
        own = grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]
        return own * ctx.grad_scale, None, None


def gather_features(
    features: torch.Tensor, group: dist.ProcessGroup | None = None, *, grad_scale: float = 1.0
) -> torch.Tensor:
    """`[N B, d]`: every process's `[B, d]` features, in rank order, with a gradient: a process's own features get
    the sum over processes of the gradient at their rows, times `grad_scale` (N under DDP: see the module's doc)."""
    return _GatherFeatures.apply(features, group, grad_scale)


class _SumOverProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None  # every process computes the same loss from the sum: d sum / d part = 1, nothing to add


def sum_over_processes(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The sum of `tensor` over processes, on every process, for a loss that every process computes alike from it:
    its gradient reaches each process's part as it is."""
    return _SumOverProcesses.apply(tensor, group)


def _owned(classes: torch.Tensor, shard: ClassShard) -> torch.Tensor:
    return (classes >= shard.start) & (classes < shard.stop)


def sharded_subset_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    shard: ClassShard,
    classes: torch.Tensor,
    *,
    sparse_grad: bool = False,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """`[N B, K']` logits of the gathered `features [N B, d]` at `classes` (global class ids, `[N B, K']` or `[K']`),
    the same on every process: each process computes the entries of the classes it owns (`weight [C / N, d]`,
    `bias [C / N]` are its rows), the others are 0 there, and the sum over processes assembles them.

    Args:
        sparse_grad: the weight's gradient as a sparse tensor over the rows used (`F.embedding(sparse=True)`), for
            the row-sparse optimizers.
    """
    classes = classes.expand(features.shape[0], -1)
    # The entries this process computes (their number: a host-device synchronisation on an accelerator).
    examples, columns = _owned(classes, shard).nonzero(as_tuple=True)
    rows = classes[examples, columns] - shard.start
    weights = F.embedding(rows, weight, sparse=sparse_grad)  # [n, d]
    values = torch.linalg.vecdot(weights, features[examples].to(weights.dtype))
    if bias is not None:
        values = values + bias[rows]
    own = values.new_zeros(classes.shape).index_put((examples, columns), values)
    return sum_over_processes(own, group)


def sharded_logsumexp(local_logits: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """`[N B]` logsumexp over all C classes of logits held as `[N B, C / N]` per process, in float32: the max over
    processes (a shift, without gradient), then the sum of exponentials over processes."""
    local_logits = local_logits.float()
    shift = local_logits.detach().amax(dim=-1)
    dist.all_reduce(shift, op=dist.ReduceOp.MAX, group=group)
    total = sum_over_processes((local_logits - shift.unsqueeze(-1)).exp().sum(-1), group)
    return shift + total.log()


def sharded_kd_loss(
    student_local: torch.Tensor,
    teacher_local: torch.Tensor,
    temperature: float,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """`hf_dis.kd_loss` (T^2 KL(p_t || p_s), batch mean) over all C classes, from each process's `[N B, C / N]`
    student and teacher logits of the classes it owns; the same value on every process."""
    student = student_local.float() / temperature
    teacher = teacher_local.detach().float() / temperature
    log_p_t = teacher - sharded_logsumexp(teacher, group).unsqueeze(-1)
    # KL = sum_j p_t,j (log p_t,j - z_s,j / T) + logsumexp(z_s / T), since the p_t,j sum to 1: the student's
    # log-partition, the same on every process, is added once to the sum of the parts, not inside each part (where
    # each process's backward would give it only its own part's share of the gradient).
    local_part = (log_p_t.exp() * (log_p_t - student)).sum(-1)
    kl = sum_over_processes(local_part, group) + sharded_logsumexp(student, group)
    return kl.mean() * temperature**2


def sharded_cross_entropy(
    student_local: torch.Tensor,
    labels: torch.Tensor,
    shard: ClassShard,
    group: dist.ProcessGroup | None = None,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """`F.cross_entropy` over all C classes (batch mean, with its `label_smoothing`) from each process's
    `[N B, C / N]` logits; the same value on every process. `labels [N B]` are global class ids."""
    student = student_local.float()
    own = _owned(labels, shard)
    label_logit = student.gather(1, (labels - shard.start).clamp(0, shard.size - 1).unsqueeze(1)).squeeze(1)
    # -log p_y with weight 1 - eps and the mean over classes of -log p_j with weight eps: logsumexp minus the
    # label's logit and the mean logit, weighted alike
    target_logit = (1 - label_smoothing) * label_logit * own
    if label_smoothing:
        target_logit = target_logit + label_smoothing * student.sum(-1) / shard.num_classes
    return (sharded_logsumexp(student, group) - sum_over_processes(target_logit, group)).mean()


@torch.no_grad()
def sharded_topk(
    local_logits: torch.Tensor, shard: ClassShard, k: int, group: dist.ProcessGroup | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `[N B, k]` highest logits over all C classes and their global class ids, in descending order, the same on
    every process: each process's top k of its own classes, gathered, and the top k of those (between processes,
    equal values go to the lower rank's class, the lower id)."""
    if not 0 < k <= shard.num_classes:
        raise ValueError(f"k must be in [1, {shard.num_classes}], got {k}.")
    local = local_logits.float().topk(min(k, shard.size), dim=-1)
    missing = k - local.values.shape[-1]  # a shard smaller than k: padded, so that every process sends k columns
    values = F.pad(local.values, (0, missing), value=-torch.inf)
    classes = F.pad(local.indices + shard.start, (0, missing), value=-1)
    # [N B, N k] in rank order; a stable sort keeps the lower rank first among equal values
    values = torch.cat(gather_from_processes(values.unsqueeze(0), group).unbind(0), dim=-1)
    classes = torch.cat(gather_from_processes(classes.unsqueeze(0), group).unbind(0), dim=-1)
    order = values.sort(dim=-1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, order), classes.gather(1, order)


class ShardedLinear(ClassRestriction, nn.Module):
    """One process's rows of a linear classifier over C classes (`shard`), as a model's classifier: its forward
    gathers every process's features first, so that a model whose classifier it is returns logits for the whole
    batch of every process (`[N B, ...]`). Outside `restricted_to`, the logits of this process's classes only
    (`[N B, C / N]`, for the losses and the top-k of this module); inside `restricted_to(classes)` (`[K']` or
    `[N B, K']`, global class ids), the assembled logits at those classes (`[N B, K']`, the same on every process).

    Attributes:
        weight, bias: this process's rows (`[C / N, d]`, `[C / N]`).
        sparse_grad: restricted forwards give the weight a sparse gradient over the rows used (row-sparse updates).
        grad_scale: the factor on the features' gradient (`gather_features`): the number of processes, as DDP, which
            averages the backbone's gradients over processes, needs; 1 outside DDP.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        shard: ClassShard,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        """From this process's rows, `weight [C / N, d]` and `bias [C / N]` (copied): a classifier too large for
        one process is never built whole."""
        super().__init__()
        if weight.dim() != 2 or weight.shape[0] != shard.size or (bias is not None and bias.shape != (shard.size,)):
            bias_shape = None if bias is None else tuple(bias.shape)
            raise ValueError(
                f"the shard owns {shard.size} classes: its weight must be [{shard.size}, d] and its bias "
                f"[{shard.size}], got {tuple(weight.shape)} and {bias_shape}."
            )
        self.in_features, self.out_features = weight.shape[1], shard.num_classes
        self.shard, self.group = shard, group
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.sparse_grad = False
        self.grad_scale = float(shard.world_size)
        self._gathered: dict[str, torch.Tensor] | None = None  # the whole classifier, inside `gathered` only
        self.register_load_state_dict_pre_hook(_own_rows_of_whole_classifier)
        self.register_state_dict_post_hook(_whole_classifier_when_gathered)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2:
            raise ValueError(
                f"a sharded classifier needs its input to be [batch, features], got {tuple(features.shape)}."
            )
        gathered = gather_features(features, self.group, grad_scale=self.grad_scale)
        if self._classes is None:
            return F.linear(gathered, self.weight, self.bias)
        return sharded_subset_logits(
            gathered, self.weight, self.bias, self.shard, self._classes, sparse_grad=self.sparse_grad, group=self.group
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, shard: ClassShard, group: dist.ProcessGroup | None = None):
        """This process's rows of a whole `linear` classifier over `shard.num_classes` classes."""
        if linear.out_features != shard.num_classes:
            raise ValueError(f"the classifier has {linear.out_features} classes, the shard is of {shard.num_classes}.")
        rows = slice(shard.start, shard.stop)
        bias = None if linear.bias is None else linear.bias[rows]
        sharded = cls(linear.weight[rows], bias, shard, group)
        sharded.weight.requires_grad_(linear.weight.requires_grad)  # a frozen classifier stays frozen
        return sharded

    @contextlib.contextmanager
    def gathered(self, dst: int = 0) -> Iterator[None]:
        """Inside: this module's `state_dict()` on process `dst` holds the whole classifier (`[C, d]`, `[C]`: every
        process's rows, gathered there; a collective, to enter on every process), as one unsharded model saves it;
        the other processes' hold their own rows."""
        gathered = {"weight": gather_rows(self.weight, self.shard, dst, self.group)}
        if self.bias is not None:
            gathered["bias"] = gather_rows(self.bias, self.shard, dst, self.group)
        self._gathered = gathered if self.shard.rank == dst else None
        try:
            yield
        finally:
            self._gathered = None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rows=[{self.shard.start}, "
            f"{self.shard.stop}) on process {self.shard.rank} of {self.shard.world_size}"
        )


def gather_rows(rows: torch.Tensor, shard: ClassShard, dst: int = 0, group: dist.ProcessGroup | None = None):
    """The whole `[C, ...]` tensor of every process's `rows` (`[C / N, ...]`, in rank order) on process `dst`; None
    on the others. Shards differ by one row at most: each is padded to the largest for the collective."""
    largest = -(-shard.num_classes // shard.world_size)
    padded = torch.zeros((largest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: shard.size] = rows.detach()
    parts = [torch.empty_like(padded) for _ in range(shard.world_size)] if shard.rank == dst else None
    dist.gather(padded, parts, dst=dst, group=group)
    if parts is None:
        return None
    sizes = [class_shard(shard.num_classes, rank, shard.world_size).size for rank in range(shard.world_size)]
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def _whole_classifier_when_gathered(module: ShardedLinear, state_dict: dict, prefix: str, local_metadata) -> None:
    if module._gathered is not None:
        for name, tensor in module._gathered.items():
            state_dict[prefix + name] = tensor


def _own_rows_of_whole_classifier(module: ShardedLinear, state_dict: dict, prefix: str, *_: Any) -> None:
    """A state dict of the whole classifier (a saved student, a checkpoint) loads this process's rows of it."""
    for name in ("weight", "bias"):
        tensor = state_dict.get(prefix + name)
        if tensor is not None and tensor.shape[0] == module.shard.num_classes != module.shard.size:
            state_dict[prefix + name] = tensor[module.shard.start : module.shard.stop]


def shard_classifier(model: nn.Module, group: dist.ProcessGroup | None = None) -> ShardedLinear:
    """Replace `model`'s linear classifier (found as `split_classifier` finds it) by this process's `ShardedLinear`
    of it, in place, and return it; the other rows are dropped from this process."""
    split = split_classifier(model)
    shard = class_shard(split.num_classes, dist.get_rank(group), dist.get_world_size(group))
    sharded = ShardedLinear.from_linear(split.head, shard, group)
    model.set_submodule(split.head_path, sharded)
    return sharded
