"""The trainer's side of `classifier_parallel=True` (the student's classifier sharded over the run's processes:
`hf_dis.heads.sharded`): what every process needs of the whole batch, the teacher's logits at a process's own
classes, DIS's probe statistic from them, the gradient norm over the shards, and the classifier optimizer's state,
saved per process.

Every process computes the loss of the whole global batch (the examples of every process, in rank order), so each
gathers the batch's labels and teacher logits; the student's logits come from the sharded head itself, which gathers
the features.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hf_dis.data.cached_logits import CachedTeacherLogits, TeacherLogits
from hf_dis.heads.sharded import ClassShard, ShardedLinear, gather_from_processes, sharded_logsumexp
from hf_dis.losses.distillation import teacher_log_partition
from hf_dis.sampling.dis import DISSampler, teacher_ranks

#: The row-sparse classifier optimizer's state of one process's shard, in each checkpoint folder.
SHARD_OPTIMIZER_NAME = "classifier_optimizer-rank{rank}-of-{world_size}.pt"
_SHARD_OPTIMIZER_PATTERN = re.compile(r"^classifier_optimizer-rank(\d+)-of-(\d+)\.pt$")


def gathered_teacher_logits(teacher_logits: TeacherLogits) -> TeacherLogits:
    """Every process's teacher logits, in rank order: dense `[N B, C]` (a live teacher's), or the cache columns of
    the whole batch (`[N B, R]`: never `[N B, C]`)."""
    if isinstance(teacher_logits, CachedTeacherLogits):
        columns = (teacher_logits.top_classes, teacher_logits.top_logits, teacher_logits.tail_logit)
        return CachedTeacherLogits(*(gather_from_processes(c) for c in columns), teacher_logits.num_classes)
    return gather_from_processes(teacher_logits.detach())


def own_teacher_logits(teacher_logits: TeacherLogits, shard: ClassShard) -> torch.Tensor:
    """`[N B, C / N]` float32 teacher logits at the classes `shard` owns."""
    if isinstance(teacher_logits, CachedTeacherLogits):
        return teacher_logits.at(torch.arange(shard.start, shard.stop, device=teacher_logits.device))
    return teacher_logits[:, shard.start : shard.stop].float()


def sharded_probe_statistic(
    sampler: DISSampler,
    teacher_logits: TeacherLogits,
    teacher_local: torch.Tensor,
    student_local: torch.Tensor,
    shard: ClassShard,
    temperature: float,
) -> torch.Tensor:
    """DIS's probe statistic of the whole batch (`DISSampler.probe_statistic`), the same on every process: each
    process's share from its own classes (|p_s - p_t| there, at the teacher ranks `teacher_ranks` gives them), summed
    over processes."""
    if not isinstance(sampler, DISSampler):
        raise ValueError(f"classifier_parallel has DIS's probe statistic only; sampler {sampler.name!r} adapts too.")
    student = student_local.detach().float() / temperature
    p_s = (student - sharded_logsumexp(student).unsqueeze(-1)).exp()
    p_t = (teacher_local / temperature - teacher_log_partition(teacher_logits, temperature).unsqueeze(-1)).exp()
    ranks = teacher_ranks(teacher_logits, shard.start, shard.stop)
    share = sampler.interaction_statistic((p_s - p_t).abs(), ranks).to(student.device)
    dist.all_reduce(share)
    return share


def sharded_grad_norm(model: nn.Module, head: ShardedLinear, max_norm: float) -> torch.Tensor:
    """The gradient norm of the whole model, clipped to `max_norm` (inf: measured only), as `clip_grad_norm_`: the
    replicated parameters' norm (the same on every process after DDP's reduction) and every process's shard's,
    summed over processes."""
    shard_ids = {id(p) for p in (head.weight, head.bias) if p is not None}
    parameters = [p for p in model.parameters() if p.grad is not None]
    replicated = [p.grad for p in parameters if id(p) not in shard_ids]
    own = [p.grad for p in parameters if id(p) in shard_ids]
    replicated_square, own_square = (
        torch.nn.utils.get_total_norm(grads).to(head.weight.device) ** 2
        if grads
        else torch.zeros((), device=head.weight.device)
        for grads in (replicated, own)
    )
    dist.all_reduce(own_square)
    total = (replicated_square + own_square).sqrt()
    if max_norm != float("inf"):
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total


def shard_optimizer_name(shard: ClassShard) -> str:
    """The file of `shard`'s classifier optimizer state in a checkpoint folder."""
    return SHARD_OPTIMIZER_NAME.format(rank=shard.rank, world_size=shard.world_size)


def load_shard_optimizer_state(checkpoint: str | os.PathLike, shard: ClassShard) -> dict[str, Any]:
    """This process's classifier optimizer state from `checkpoint`; a clear error when the checkpoint was saved with
    another number of processes (its shards are other rows), or without a sharded classifier."""
    path = os.path.join(checkpoint, shard_optimizer_name(shard))
    if os.path.isfile(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    saved = sorted(
        {int(match[2]) for name in os.listdir(checkpoint) if (match := _SHARD_OPTIMIZER_PATTERN.match(name))}
    )
    if saved:
        raise ValueError(
            f"{checkpoint} was saved by a run whose classifier was sharded over {saved[0]} processes; this run has "
            f"{shard.world_size}. The classifier optimizer's state is per shard: resume with --num_processes "
            f"{saved[0]}."
        )
    raise ValueError(
        f"{checkpoint} holds no classifier shard state ({os.path.basename(path)}): it was not saved with "
        "classifier_parallel=True, so the sharded classifier's optimizer cannot resume where it stopped."
    )
