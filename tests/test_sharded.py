"""The classifier sharded over processes (`hf_dis.heads.sharded`): two gloo processes, each holding half the rows,
against one process holding them all."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import hf_dis
from hf_dis.data.cached_logits import CachedTeacherLogits
from hf_dis.heads.sharded import (
    ShardedLinear,
    class_shard,
    gather_features,
    shard_classifier,
    sharded_cross_entropy,
    sharded_kd_loss,
    sharded_subset_logits,
    sharded_topk,
)
from hf_dis.trainer.sharded_classifier import own_teacher_logits, sharded_probe_statistic

WORLD_SIZE, BATCH, WIDTH, CLASSES = 2, 3, 4, 11  # shards of 6 and 5 classes


def test_shards_cover_the_classes_once_in_order():
    for num_classes, world_size in ((11, 2), (12, 3), (5, 5), (10**7, 8)):
        shards = [class_shard(num_classes, rank, world_size) for rank in range(world_size)]
        assert shards[0].start == 0 and shards[-1].stop == num_classes
        assert all(left.stop == right.start for left, right in zip(shards, shards[1:], strict=False))
        assert max(s.size for s in shards) - min(s.size for s in shards) <= 1
        assert [s.size for s in shards] == [len(part) for part in torch.arange(num_classes).tensor_split(world_size)]
    with pytest.raises(ValueError, match="each process must own at least one class"):
        class_shard(3, 0, 4)
    with pytest.raises(ValueError, match="rank must be in"):
        class_shard(10, 2, 2)


def _inputs():
    """The whole batch and classifier, the same on every process (seeded)."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(WORLD_SIZE * BATCH, WIDTH, generator=g)
    weight, bias = torch.randn(CLASSES, WIDTH, generator=g), torch.randn(CLASSES, generator=g)
    teacher = torch.randn(WORLD_SIZE * BATCH, CLASSES, generator=g) * 3
    classes = torch.randint(CLASSES, (WORLD_SIZE * BATCH, 5), generator=g)
    classes[:, 1] = classes[:, 0]  # duplicates within an example
    labels = torch.randint(CLASSES, (WORLD_SIZE * BATCH,), generator=g)
    upstream = torch.randn(WORLD_SIZE * BATCH, 5, generator=g)
    return features, weight, bias, teacher, classes, labels, upstream


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.clone().requires_grad_(True)


def _check_sharded(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        features, weight, bias, teacher, classes, labels, upstream = _inputs()
        shard = class_shard(CLASSES, rank, WORLD_SIZE)
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        own_rows = slice(shard.start, shard.stop)

        def sharded(loss_of, *, sparse_grad=False, grad_scale=1.0):
            local_features, local_weight, local_bias = _leaf(features[mine]), _leaf(weight[own_rows]), _leaf(
                bias[own_rows])  # fmt: skip
            gathered = gather_features(local_features, grad_scale=grad_scale)
            value = loss_of(gathered, local_weight, local_bias, sparse_grad)
            value.backward()
            grad_weight = local_weight.grad.to_dense() if sparse_grad else local_weight.grad
            assert local_weight.grad.is_sparse == sparse_grad
            return value.detach(), local_features.grad, grad_weight, local_bias.grad

        def reference(loss_of):
            all_features, all_weight, all_bias = _leaf(features), _leaf(weight), _leaf(bias)
            value = loss_of(all_features, all_weight, all_bias)
            value.backward()
            return value.detach(), all_features.grad[mine], all_weight.grad[own_rows], all_bias.grad[own_rows]

        def same(got, expected, scale=1.0):
            for name, a, b, factor in zip(("loss", "features", "weight", "bias"), got, expected, (1, scale, 1, 1),
                                          strict=True):  # fmt: skip
                torch.testing.assert_close(a, b * factor, msg=f"rank {rank}: {name}")

        # Sampled logits at per-example classes, and at one set for the batch.
        for sampled in (classes, classes[0]):
            for sparse_grad in (False, True):
                same(
                    sharded(
                        lambda h, w, b, s, c=sampled: (
                            sharded_subset_logits(h, w, b, shard, c, sparse_grad=s) * upstream
                        ).sum(),
                        sparse_grad=sparse_grad,
                    ),  # fmt: skip
                    reference(
                        lambda h, w, b, c=sampled: (
                            ((w[c.expand(h.shape[0], -1)] * h[:, None]).sum(-1) + b[c]) * upstream
                        ).sum()
                    ),  # fmt: skip
                )
        # Under DDP (a mean over processes of the backbone's gradient), grad_scale=N makes that mean the sum.
        same(
            sharded(lambda h, w, b, s: (sharded_subset_logits(h, w, b, shard, classes) * upstream).sum(), grad_scale=2),
            reference(lambda h, w, b: (((w[classes] * h[:, None]).sum(-1) + b[classes]) * upstream).sum()),
            scale=2.0,
        )
        # Losses over all C classes, from each process's logits of its own classes.
        same(
            sharded(lambda h, w, b, s: sharded_kd_loss(F.linear(h, w, b), teacher[:, own_rows], 2.0)),
            reference(lambda h, w, b: hf_dis.kd_loss(F.linear(h, w, b), teacher, 2.0)),
        )
        for smoothing in (0.0, 0.1):
            same(
                sharded(lambda h, w, b, s, e=smoothing: sharded_cross_entropy(
                    F.linear(h, w, b), labels, shard, label_smoothing=e)),
                reference(lambda h, w, b, e=smoothing: F.cross_entropy(F.linear(h, w, b), labels, label_smoothing=e)),
            )  # fmt: skip
        # DIS's probe statistic from each process's classes, with dense teacher logits and with cached ones.
        student = F.linear(features, weight, bias)
        top = teacher.topk(4, dim=1).indices
        cached = CachedTeacherLogits(top, teacher.gather(1, top), teacher.min(1).values - 1, CLASSES)
        sampler = hf_dis.build_sampler("dis", CLASSES, 3)
        for teacher_logits in (teacher, cached):
            statistic = sharded_probe_statistic(
                sampler, teacher_logits, own_teacher_logits(teacher_logits, shard), student[:, own_rows], shard, 2.0
            )
            expected = sampler.probe_statistic(teacher_logits, student, 2.0)
            torch.testing.assert_close(statistic, expected, msg=f"rank {rank}: probe statistic")
        # The whole classifier gathered into the state dict on process 0 (as save_model writes it), and loaded back.
        head = ShardedLinear.from_linear(torch.nn.Linear(WIDTH, CLASSES), shard)
        with torch.no_grad():
            head.weight.copy_(weight[own_rows])
            head.bias.copy_(bias[own_rows])
        with head.gathered():
            state = head.state_dict()
        expected_rows = (CLASSES,) if rank == 0 else (shard.size,)
        assert state["weight"].shape[:1] == state["bias"].shape == expected_rows
        if rank == 0:
            assert torch.equal(state["weight"], weight) and torch.equal(state["bias"], bias)
        assert head.state_dict()["weight"].shape[0] == shard.size  # outside `gathered`, its own rows
        fresh = ShardedLinear.from_linear(torch.nn.Linear(WIDTH, CLASSES), shard)
        fresh.load_state_dict({"weight": weight, "bias": bias})
        assert torch.equal(fresh.weight, weight[own_rows]) and torch.equal(fresh.bias, bias[own_rows])
        # Top-k over all classes, k above the smaller shard's 5 classes included.
        logits = F.linear(features, weight, bias)
        for k in (1, 3, 7, CLASSES):
            values, ids = sharded_topk(logits[:, own_rows], shard, k)
            expected = logits.topk(k, dim=-1)
            torch.testing.assert_close(values, expected.values, msg=f"rank {rank}: top-{k} values")
            assert torch.equal(ids, expected.indices), f"rank {rank}: top-{k} classes"
        # Each shard's first class ties with the other shard's: the lower rank's (the lower id) comes first.
        tied = torch.cat([-torch.arange(6.0), -torch.arange(5.0)]).expand(2, -1)
        assert torch.equal(sharded_topk(tied[:, own_rows], shard, 3)[1], torch.tensor([[0, 6, 1], [0, 6, 1]]))
    finally:
        dist.destroy_process_group()


def test_two_shards_give_the_logits_losses_gradients_and_top_k_of_one_whole_classifier(tmp_path):
    """Each process holds half the classifier's rows and its own examples' features: the sampled logits (per
    example, or one set for the batch; dense or sparse weight gradients), full KD, the cross-entropy (label smoothing
    too), DIS's probe statistic (dense and cached teacher logits) and the top-k over all classes equal one process's
    over the whole batch and classifier, and so do the gradients of each process's rows and features; the whole
    classifier is gathered into process 0's state dict, and a whole one loads as each process's rows."""
    mp.spawn(_check_sharded, args=(str(tmp_path / "init"),), nprocs=WORLD_SIZE, join=True)


def _check_sharded_model(rank: int, init_file: str) -> None:
    import copy

    import timm

    from hf_dis.trainer.internals import exclude_from_ddp

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=CLASSES).eval()  # eval: batch norm as one process's
        reference = copy.deepcopy(model)
        g = torch.Generator().manual_seed(1)
        images = torch.randn(WORLD_SIZE * BATCH, 3, 32, 32, generator=g)
        classes = torch.randint(CLASSES, (WORLD_SIZE * BATCH, 5), generator=g)
        upstream = torch.randn(WORLD_SIZE * BATCH, 5, generator=g)
        head = shard_classifier(model)
        assert isinstance(head, ShardedLinear) and model.get_classifier() is head
        assert head.weight.shape == (head.shard.size, model.num_features) and head.grad_scale == WORLD_SIZE
        for parameter in (head.weight, head.bias):
            exclude_from_ddp(model, parameter)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        mine, rows = slice(rank * BATCH, (rank + 1) * BATCH), slice(head.shard.start, head.shard.stop)
        with head.restricted_to(classes):
            logits = wrapped(images[mine])  # every process's examples, at their sampled classes
        (logits * upstream).sum().backward()
        expected = reference(images).gather(1, classes)
        (expected * upstream).sum().backward()
        torch.testing.assert_close(logits, expected, msg=f"rank {rank}: logits")
        with torch.no_grad():
            torch.testing.assert_close(wrapped(images[mine]), reference(images)[:, rows], msg=f"rank {rank}: rows")
        torch.testing.assert_close(head.weight.grad, reference.get_classifier().weight.grad[rows])
        torch.testing.assert_close(head.bias.grad, reference.get_classifier().bias.grad[rows])
        backbone = [(n, p) for n, p in model.named_parameters() if not n.startswith("fc.")]
        for (name, parameter), kept in zip(backbone, [p for n, p in reference.named_parameters() if
                                                       not n.startswith("fc.")], strict=True):  # fmt: skip
            torch.testing.assert_close(parameter.grad, kept.grad, msg=f"rank {rank}: {name}'s gradient under DDP")
    finally:
        dist.destroy_process_group()


def test_a_model_with_a_sharded_classifier_under_ddp_trains_as_one_process_with_the_whole_batch(tmp_path):
    """A timm model whose classifier is sharded over two processes (DDP for the rest, the shard out of it): each
    process's forward of its own images gives every example's logits at its sampled classes, those of one process
    with the whole classifier and batch; each process's rows get their gradient, and DDP's average of the backbone's
    gradients is the one-process gradient."""
    mp.spawn(_check_sharded_model, args=(str(tmp_path / "init"),), nprocs=WORLD_SIZE, join=True)
