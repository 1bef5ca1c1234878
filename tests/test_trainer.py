"""DistillationTrainer end to end on CPU: tiny timm / transformers models, 32 px images, a handful of steps."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from tiny_models import (
    NUM_CLASSES,
    RandomImages,
    StopAt,
    image_dataset,
    make_args,
    parameters,
    timm_model,
    tiny_hf,
)
from transformers import AutoModelForImageClassification, HfArgumentParser

import hf_dis
from hf_dis import DistillationArguments, DistillationTrainer
from hf_dis.data.transforms import Normalization
from hf_dis.heads import split_classifier
from hf_dis.recipes.models import build_classifier
from hf_dis.recipes.train_teacher import ClassificationTeacherArguments, ClassifierTrainer
from hf_dis.trainer import TeacherInputs
from hf_dis.trainer.run_folder import MARKER_NAME
from hf_dis.trainer.sampled_softmax import partial_fc_classes

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ["dis", "ftis", "uniform", "topk", "full"]


def head_output_shapes(trainer) -> list:
    shapes = []
    trainer.student_head.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape)))
    return shapes


# --- every sampler, both scopes, timm and transformers students -------------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "per_example"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_two_steps_timm_student(tmp_path, sampler, scope):
    student, teacher = timm_model(), timm_model("test_resnet", seed=1)
    before = parameters(student)
    num_sampled = None if sampler == "full" else 5
    args = make_args(tmp_path, sampler=sampler, sample_scope=scope, num_sampled=num_sampled)
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages())
    shapes = head_output_shapes(trainer)
    trainer.train()

    assert trainer.state.global_step == 2
    assert any(not torch.equal(before[n], p) for n, p in student.named_parameters())
    logs = trainer.state.log_history[:2]
    assert all(math.isfinite(log["loss"]) and log["kd_loss"] >= 0 and log["ce_loss"] > 0 for log in logs)
    full_shape = (4, NUM_CLASSES)
    if sampler == "full":
        assert shapes == [full_shape, full_shape]
        return
    # dis: step 0 is a full-distillation probe, step 1 is sampled; the others sample at both steps.
    sampled_shapes = shapes[1:] if sampler == "dis" else shapes
    assert full_shape not in sampled_shapes
    assert all(shape[-1] <= 5 + 4 * 2 for shape in sampled_shapes)  # K drawn + (label + teacher top-1) per example
    sampled_log = logs[1]
    assert 0 < sampled_log["teacher_mass"] <= 1 + 1e-6
    assert 1 - 1e-6 <= sampled_log["ess"] <= sampled_log["num_classes"] + 1e-4
    if sampler == "dis":
        assert trainer.sampler.num_updates == 1
        assert "dis/weight_0" in logs[0] and logs[0]["dis/weight_0"] >= 0.5 - 1e-6


@pytest.mark.parametrize("family", ["vit", "resnet"])
@pytest.mark.parametrize(("sampler", "scope"), [("dis", "batch"), ("ftis", "per_example")])
def test_two_steps_transformers_student(tmp_path, family, sampler, scope):
    student = tiny_hf(family, NUM_CLASSES).train()
    teacher = timm_model("test_resnet", seed=1)
    before = parameters(student)
    args = make_args(tmp_path, sampler=sampler, sample_scope=scope, num_sampled=5)
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages())
    shapes = head_output_shapes(trainer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(not torch.equal(before[n], p) for n, p in student.named_parameters())
    assert shapes[-1] != (4, NUM_CLASSES)
    # The swapped head shares the original parameters: the saved model is a plain transformers model.
    student.save_pretrained(tmp_path / "saved")
    reloaded = type(student).from_pretrained(tmp_path / "saved")
    assert type(reloaded.classifier if family == "vit" else reloaded.classifier[1]) is torch.nn.Linear
    torch.testing.assert_close(reloaded.state_dict(), student.state_dict())


def test_bf16_autocast_on_cpu(tmp_path):
    student, teacher = timm_model(), timm_model("test_resnet", seed=1)
    args = make_args(tmp_path, bf16=True, sampler="dis", num_sampled=5)
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages())
    dtypes = {"student": [], "teacher": []}
    trainer.student_head.register_forward_hook(lambda m, i, out: dtypes["student"].append(out.dtype))
    teacher.get_classifier().register_forward_hook(lambda m, i, out: dtypes["teacher"].append(out.dtype))
    trainer.train()
    # Both models ran under bf16 autocast (the teacher's first call is the pre-training check).
    assert set(dtypes["student"]) == {torch.bfloat16} and set(dtypes["teacher"]) == {torch.bfloat16}
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history[:2])
    assert all(p.dtype == torch.float32 for p in student.parameters())  # weights stay fp32 (mixed precision)


# --- exactness: full KD, gradient accumulation, resume ---------------------------------------------------------


@pytest.mark.parametrize(("kd_weight", "weights"), [(None, (0.3, 0.7)), (1.5, (0.3, 1.5))])
def test_full_sampler_loss_is_hinton_kd_by_hand(tmp_path, kd_weight, weights):
    """alpha x CE + w x KD, w = 1 - alpha (convex) or kd_weight (the KD term added to the objective)."""
    student, teacher = timm_model(), timm_model("test_resnet", seed=1)
    args = make_args(tmp_path, sampler="full", temperature=3.0, alpha=0.3, kd_weight=kd_weight)
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages())
    data = RandomImages(8, seed=5)
    inputs = {"pixel_values": data.images, "labels": data.labels}
    loss = trainer.compute_loss(student.train(), inputs)

    with torch.no_grad():
        z_s, z_t = student(data.images), teacher.eval()(data.images)
        p_t = torch.softmax(z_t / 3.0, dim=-1)
        kl = (p_t * (torch.log(p_t) - torch.log_softmax(z_s / 3.0, dim=-1))).sum(-1).mean() * 9.0
        expected = weights[0] * F.cross_entropy(z_s, data.labels) + weights[1] * kl
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on a CPU needs a C compiler")
def test_compiled_loss_trains_as_the_eager_one(tmp_path):
    """compile_loss=True: a DIS probe step (the full loss) then sampled steps (the sampled loss), with the label
    smoothing and a last batch of another size (a recompilation): the weights end as the eager run's, to rounding."""
    from torch._dynamo.utils import counters

    counters.clear()
    runs = []
    for compile_loss in (False, True):
        student = timm_model()
        args = make_args(
            tmp_path / str(compile_loss), max_steps=3, label_smoothing_factor=0.1, compile_loss=compile_loss
        )
        trainer = DistillationTrainer(
            model=student, args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(size=10)
        )
        trainer.train()
        runs.append((parameters(student), trainer.state.log_history[-2]))
    assert counters["stats"]["unique_graphs"] >= 2  # the full and the sampled loss were compiled
    assert runs[1][1]["kd_loss"] == pytest.approx(runs[0][1]["kd_loss"], rel=1e-4)
    for name, eager in runs[0][0].items():
        torch.testing.assert_close(runs[1][0][name], eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("dataset_size", "micro_batch"), [(8, 4), (6, 4)])
def test_gradient_accumulation_equals_the_large_batch(tmp_path, dataset_size, micro_batch):
    """One SGD step on the whole dataset equals two accumulated micro-batches, also when the last one is smaller
    (6 = 4 + 2): the loss is normalised by the examples of the accumulated step, not by the number of micro-batches."""

    def one_step(batch_size, accumulation):
        student = timm_model()  # LayerNorm only: batch composition does not change the per-example outputs
        args = make_args(
            tmp_path,
            sampler="full",
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            lr_scheduler_type="constant",
        )
        trainer = DistillationTrainer(
            model=student,
            args=args,
            teacher=timm_model("test_resnet", seed=1),
            train_dataset=RandomImages(dataset_size),
        )
        trainer.train()
        return parameters(student)

    start = parameters(timm_model())
    large = one_step(dataset_size, 1)
    accumulated = one_step(micro_batch, 2)
    moved = sum(float((large[n] - start[n]).abs().max()) for n in start)
    assert moved > 1e-3  # the step is large enough for a scaling error to show
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "restore_callbacks,classifier_optimizer", [(False, "dense"), (True, "dense"), (False, "row_sparse")]
)
def test_resume_is_bitwise_identical(tmp_path, restore_callbacks, classifier_optimizer):
    """4 steps straight == 2 steps, interrupted, then resumed for 2: same weights bitwise and same DIS state (with
    the row-sparse classifier optimizer too: its state travels in the checkpoint)."""
    torch.use_deterministic_algorithms(True)
    try:

        def run(output_dir, callbacks=(), resume=None):
            args = make_args(
                tmp_path,
                output_dir=str(output_dir),
                sampler="dis",
                num_sampled=5,
                max_steps=4,
                save_steps=2,
                save_strategy="steps",
                gradient_accumulation_steps=2,
                per_device_train_batch_size=2,
                optim="adamw_torch",
                learning_rate=1e-2,
                restore_callback_states_from_checkpoint=restore_callbacks,
                classifier_optimizer=classifier_optimizer,
                weight_decay=0.1,
            )
            student = timm_model()
            trainer = DistillationTrainer(
                model=student,
                args=args,
                teacher=timm_model("test_resnet", seed=1),
                train_dataset=RandomImages(24),
                callbacks=list(callbacks),
            )
            trainer.train(resume_from_checkpoint=resume)
            return student, trainer.sampler

        straight, straight_sampler = run(tmp_path / "straight")
        run(tmp_path / "interrupted", callbacks=[StopAt(2)])
        checkpoint = tmp_path / "interrupted" / "checkpoint-2"
        saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]
        assert saved["SamplerStateCallback"]["attributes"]["sampler_state"]["num_updates"] == 1
        resumed, resumed_sampler = run(tmp_path / "interrupted", resume=str(checkpoint))
    finally:
        torch.use_deterministic_algorithms(False)

    for (name, p), q in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert straight_sampler.num_updates == resumed_sampler.num_updates == 2  # probes at steps 0 and 2
    assert straight_sampler.state_dict()["mixture"] == resumed_sampler.state_dict()["mixture"]
    assert straight_sampler.state_dict()["interaction"] == resumed_sampler.state_dict()["interaction"]
    final = json.loads((tmp_path / "interrupted" / "checkpoint-4" / "trainer_state.json").read_text())
    assert final["stateful_callbacks"]["SamplerStateCallback"]["attributes"]["sampler_state"]["num_updates"] == 2


def test_a_checkpoint_is_marked_complete_after_the_classifier_optimizer_state_is_in_it(tmp_path):
    from hf_dis.trainer.row_sparse_updates import ClassifierOptimizerCallback
    from hf_dis.trainer.run_folder import CheckpointMarkerCallback

    args = make_args(tmp_path, classifier_optimizer="row_sparse", max_steps=1)
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(4)
    )
    trainer.create_optimizer()
    kinds = [type(callback) for callback in trainer.callback_handler.callbacks]
    assert kinds.index(ClassifierOptimizerCallback) < kinds.index(CheckpointMarkerCallback) == len(kinds) - 1


def test_row_sparse_classifier_optimizer(tmp_path, monkeypatch):
    """Every row used (full KD): the same training as the dense optimizer. Sampled steps: the weight's gradient is
    sparse over exactly the rows the step's forwards used, and exactly those rows move (weight decay included), where
    the dense optimizer moves all of them."""

    def train(classifier_optimizer, sampler, drawn=None, gradients=None):
        args = make_args(tmp_path, output_dir=str(tmp_path / f"{classifier_optimizer}-{sampler}"), sampler=sampler,
                         num_sampled=None if sampler == "full" else 3, max_steps=3, optim="adamw_torch",
                         learning_rate=1e-2, weight_decay=0.1, classifier_optimizer=classifier_optimizer)  # fmt: skip
        trainer = DistillationTrainer(
            model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(12)
        )
        head = trainer.student_head
        initial = head.weight.detach().clone()
        if drawn is not None:
            restricted = head.restricted_to
            monkeypatch.setattr(head, "restricted_to", lambda classes: drawn.append(classes) or restricted(classes))
            head.weight.register_post_accumulate_grad_hook(lambda weight: gradients.append(weight.grad.coalesce()))
        trainer.train()
        return trainer, initial

    dense, _ = train("dense", "full")
    sparse, _ = train("row_sparse", "full")
    assert sparse.classifier_optimizer is not None and dense.classifier_optimizer is None
    for (name, p), q in zip(dense.model.named_parameters(), sparse.model.parameters(), strict=True):
        # The two AdamW implementations round differently (1e-7 after a step); later gradients carry that on.
        torch.testing.assert_close(q, p, rtol=1e-4, atol=5e-5, msg=name)

    drawn, gradients = [], []
    sparse, initial = train("row_sparse", "uniform", drawn, gradients)
    assert len(drawn) == len(gradients) == 3 and all(grad.is_sparse for grad in gradients)
    for classes, grad in zip(drawn, gradients, strict=True):
        assert torch.equal(grad.indices()[0], torch.unique(classes))
    moved = (sparse.student_head.weight.detach() != initial).any(1).nonzero().flatten()
    assert torch.equal(moved, torch.unique(torch.cat([classes.flatten() for classes in drawn])))
    assert moved.numel() < NUM_CLASSES
    dense, initial = train("dense", "uniform")
    assert (dense.student_head.weight.detach() != initial).any(1).all()  # weight decay moves every row
    # The first step's gradients are the same: the Trainer clips (max_grad_norm=1) and logs the same norm, the
    # classifier's sparse gradient included.
    first = [trainer.state.log_history[0]["grad_norm"] for trainer in (dense, sparse)]
    assert first[0] > 1.0 and first[1] == pytest.approx(first[0], rel=1e-5)


def test_row_sparse_adamw_keeps_one_second_moment_per_row_with_optim_args(tmp_path):
    args = make_args(tmp_path, sampler="uniform", num_sampled=3, optim="adamw_torch", learning_rate=1e-2,
                     classifier_optimizer="row_sparse", optim_args="second_moment=row")  # fmt: skip
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(12)
    )
    trainer.train()
    weight = trainer.student_head.weight
    state = trainer.classifier_optimizer.state[weight]
    assert state["exp_avg_sq"].shape == (NUM_CLASSES,) and state["exp_avg"].shape == weight.shape
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)
    card = (tmp_path / "out" / "README.md").read_text()  # the model card says how the classifier was trained
    assert "| classifier updates | RowSparseAdamW on the sampled rows, one second moment per row |" in card


class _GlooAccelerator:
    """What `reduce_row_gradient` reads of Accelerate's `Accelerator`, over an initialised gloo group."""

    sync_gradients = True
    num_processes = 2

    def reduce(self, tensor, reduction):
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
        return tensor / self.num_processes if reduction == "mean" else tensor


def _row_gradients(rank: int) -> list[torch.Tensor]:
    """Each case's gradient on `rank` ([6, 2] weight): sparse on different rows (one repeated, uncoalesced), and
    dense on rank 0 against sparse on rank 1."""
    generator = torch.Generator().manual_seed(rank)
    rows = torch.tensor([[1, 3, 1]]) if rank == 0 else torch.tensor([[3, 5]])
    values = torch.randn(rows.shape[1], 2, generator=generator)
    sparse = torch.sparse_coo_tensor(rows, values, (6, 2), check_invariants=False)
    return [sparse, torch.randn(6, 2, generator=generator) if rank == 0 else sparse]


def _reduce_rows_worker(rank: int, port: int, out: str) -> None:
    from hf_dis.trainer.row_sparse_updates import reduce_row_gradient

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results = []
    for grad in _row_gradients(rank):
        weight = torch.nn.Parameter(torch.zeros(6, 2))
        weight.grad = grad
        reduce_row_gradient(weight, _GlooAccelerator())
        results.append((weight.grad.is_sparse, weight.grad.to_dense()))
    torch.save(results, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_row_gradient_reduction_averages_over_processes(tmp_path):
    """The classifier's gradient (outside DDP) is the two processes' average: sparse over the union of their rows
    when both are sparse, dense when one is dense; the same on both."""
    torch.multiprocessing.spawn(_reduce_rows_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for case, (zero, one) in enumerate(zip(*ranks, strict=True)):
        expected = (_row_gradients(0)[case].to_dense() + _row_gradients(1)[case].to_dense()) / 2
        assert zero[0] == one[0] == (case == 0)  # sparse stays sparse; a dense process makes it dense
        torch.testing.assert_close(zero[1], expected)
        assert torch.equal(zero[1], one[1])


def test_row_sparse_classifier_optimizer_checks(tmp_path):
    with pytest.raises(ValueError, match="does not support fp16"):
        make_args(tmp_path, classifier_optimizer="row_sparse", fp16=True)
    with pytest.raises(ValueError, match="has SGD and AdamW variants"):
        make_args(tmp_path, classifier_optimizer="row_sparse", optim="adafactor")
    with pytest.raises(ValueError, match="second_moment must be 'element' or 'row', got 'rows'"):
        make_args(tmp_path, classifier_optimizer="row_sparse", optim="adamw_torch", optim_args="second_moment=rows")
    with pytest.raises(ValueError, match="second_moment=row is an AdamW option"):
        make_args(tmp_path, classifier_optimizer="row_sparse", optim_args="second_moment=row")
    with pytest.raises(ValueError, match="an option of classifier_optimizer='row_sparse'"):
        make_args(tmp_path, optim="adamw_torch", optim_args="second_moment=row")
    student = timm_model()
    optimizer = torch.optim.Adam(student.parameters(), lr=0.1)
    trainer = DistillationTrainer(
        model=student, args=make_args(tmp_path, classifier_optimizer="row_sparse"),
        teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(), optimizers=(optimizer, None),
    )  # fmt: skip
    with pytest.raises(ValueError, match="with a passed optimizer needs torch.optim.SGD"):
        trainer.train()


def test_row_sparse_updates_with_a_passed_sgd(tmp_path):
    """The recipes pass their own SGD (and schedule): with row_sparse, the classifier leaves it for a RowSparseSGD
    with its hyper-parameters, so that with every row used (full KD) training is the dense run's."""

    def train(classifier_optimizer):
        student = timm_model()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        args = make_args(tmp_path, output_dir=str(tmp_path / classifier_optimizer), sampler="full", max_steps=3,
                         classifier_optimizer=classifier_optimizer)  # fmt: skip
        trainer = DistillationTrainer(
            model=student, args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(12),
            optimizers=(optimizer, schedule),
        )  # fmt: skip
        trainer.train()
        return trainer

    dense, sparse = train("dense"), train("row_sparse")
    assert type(sparse.classifier_optimizer).__name__ == "RowSparseSGD" and dense.classifier_optimizer is None
    group = sparse.classifier_optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["lr"]) == (0.9, 5e-3, pytest.approx(0.05 / 3))
    for (name, p), q in zip(dense.model.named_parameters(), sparse.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


def test_resuming_dis_without_sampler_state_is_an_error(tmp_path):
    args = make_args(tmp_path, sampler="dis", num_sampled=5, save_strategy="steps", save_steps=2)
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages()
    )
    trainer.train()
    state_file = Path(args.output_dir) / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["SamplerStateCallback"]
    state_file.write_text(json.dumps(state))
    (state_file.parent / MARKER_NAME).unlink()  # as a plain Trainer's checkpoint: no completion marker
    with pytest.raises(ValueError, match="holds no sampler state"):
        trainer.train(resume_from_checkpoint=True)


# --- the teacher ------------------------------------------------------------------------------------------------


def test_teacher_is_frozen_outside_the_optimizer_and_unchanged(tmp_path):
    student, teacher = timm_model(), timm_model("test_resnet", seed=1)
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # BN running stats included
    trainer = DistillationTrainer(
        model=student, args=make_args(tmp_path), teacher=teacher, train_dataset=RandomImages()
    )
    trainer.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_teacher_inputs_renormalise_and_resize():
    student_norm = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    teacher_norm = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = torch.rand(2, 3, 8, 8)
    student_batch = (images - 0.5) / 0.5
    converted = TeacherInputs(student_norm, teacher_norm)(student_batch)
    mean, std = torch.tensor(teacher_norm.mean).view(1, 3, 1, 1), torch.tensor(teacher_norm.std).view(1, 3, 1, 1)
    torch.testing.assert_close(converted, (images - mean) / std)
    assert torch.equal(TeacherInputs(student_norm, student_norm)(student_batch), student_batch)
    assert TeacherInputs(student_norm, teacher_norm, (16, 16))(student_batch).shape == (2, 3, 16, 16)


def test_the_teacher_conversion_reads_the_normalisation_the_transforms_read():
    """One resolver: the statistics the trainer converts the teacher's batch with are those hf_dis.data.data_config
    gives the image transforms, for a plain timm model, a TimmWrapper and an image processor; None when unknown."""
    from transformers import ViTImageProcessor

    from hf_dis.data.transforms import model_normalization

    plain = timm_model("test_resnet", seed=1)
    plain.pretrained_cfg = {**plain.pretrained_cfg, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    wrapped = hf_dis.timm_classifier("test_resnet", NUM_CLASSES)
    processor = ViTImageProcessor(image_mean=[0.7] * 3, image_std=[0.2] * 3)
    for model, given in ((plain, None), (wrapped, None), (tiny_hf("resnet"), processor), (plain, processor)):
        config = hf_dis.data.data_config(model, given)
        assert model_normalization(model, given) == Normalization(tuple(config["mean"]), tuple(config["std"]))
    assert model_normalization(plain).mean == (0.1, 0.2, 0.3)
    assert model_normalization(plain, processor).mean == (0.7, 0.7, 0.7)  # the processor, when given, wins
    assert model_normalization(tiny_hf("resnet")) is None


def test_trainer_renormalises_for_a_teacher_with_other_statistics(tmp_path):
    student, teacher = timm_model(), timm_model("test_resnet", seed=1)  # both declare mean = std = 0.5
    imagenet = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    teacher.pretrained_cfg = {**teacher.pretrained_cfg, "mean": imagenet.mean, "std": imagenet.std}
    trainer = DistillationTrainer(model=student, args=make_args(tmp_path), teacher=teacher)
    assert trainer.teacher_inputs.renormalize
    seen = []
    teacher.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    batch = torch.rand(2, 3, 32, 32)
    trainer.teacher_logits(batch)
    mean, std = torch.tensor(imagenet.mean).view(1, 3, 1, 1), torch.tensor(imagenet.std).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (batch * 0.5 + 0.5 - mean) / std)


def test_fixed_resolution_teacher_gets_a_clear_error_then_a_resize(tmp_path):
    teacher = timm_model("test_vit3", seed=1)  # a ViT that only takes 160 px
    trainer = DistillationTrainer(
        model=timm_model(), args=make_args(tmp_path), teacher=teacher, train_dataset=RandomImages()
    )
    with pytest.raises(ValueError, match=r"cannot run on the student's batch.*teacher_image_size=160"):
        trainer.train()
    assert not os.path.exists(tmp_path / "out" / "checkpoint-2")
    args = make_args(tmp_path, teacher_image_size=160)
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=teacher, train_dataset=RandomImages())
    trainer.train()
    assert trainer.state.global_step == 2


def test_teacher_from_a_local_directory(tmp_path):
    import transformers

    config = transformers.TimmWrapperConfig(architecture="test_resnet", num_labels=NUM_CLASSES)
    transformers.TimmWrapperForImageClassification(config).save_pretrained(tmp_path / "teacher")
    args = make_args(tmp_path, teacher_model=str(tmp_path / "teacher"))
    trainer = DistillationTrainer(model=timm_model(), args=args, train_dataset=RandomImages())
    assert not trainer.teacher.training
    trainer.train()
    assert trainer.state.global_step == 2


def test_teacher_that_cannot_be_loaded_offline(tmp_path):
    with pytest.raises(OSError, match=r"Hub is unreachable.*local directory"):
        DistillationTrainer(model=timm_model(), args=make_args(tmp_path, teacher_model="someone/teacher-model"))
    with pytest.raises(OSError, match=r"teacher 'resnet18.a1_in1k'.*Hub is unreachable"):  # timm name, Hub weights
        hf_dis.load_teacher("resnet18.a1_in1k")
    with pytest.raises(OSError, match="not a local directory, a Hub id"):
        hf_dis.load_teacher("no_such_architecture")


# --- bad input: a clear error before training, nothing written -------------------------------------------------


def test_teacher_and_student_with_different_classes(tmp_path):
    with pytest.raises(ValueError, match="teacher predicts 30 classes and the student 20"):
        DistillationTrainer(model=timm_model(), args=make_args(tmp_path), teacher=timm_model("test_resnet", 30))


def labelled_images(labels, names: list[str] | None = None) -> datasets.Dataset:
    """A `datasets` image table in the usual raw form (image, label), converted on the fly by set_transform; with
    `names`, the label column is a `ClassLabel` of those class names."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in labels]
    table = datasets.Dataset.from_dict({"image": images, "label": labels})
    if names is not None:
        table = table.cast_column("label", datasets.ClassLabel(names=names))

    def to_tensors(batch):
        pixels = torch.tensor(np.asarray(batch["image"]), dtype=torch.float32).permute(0, 3, 1, 2) / 255
        return {"pixel_values": (pixels - 0.5) / 0.5, "labels": batch["label"]}

    table.set_transform(to_tensors)
    return table


def test_labels_outside_the_classes(tmp_path):
    dataset = labelled_images([0, 3, NUM_CLASSES + 5, 1])
    trainer = DistillationTrainer(
        model=timm_model(), args=make_args(tmp_path), teacher=timm_model("test_resnet", seed=1), train_dataset=dataset
    )
    with pytest.raises(ValueError, match=r"'label' column has label 25, outside \[0, 20\)"):
        trainer.train()
    assert not any((tmp_path / "out").iterdir())  # Trainer.__init__ makes the folder; nothing is written in it


def test_the_student_takes_its_datas_class_names_and_saves_them(tmp_path):
    names = [f"class {chr(ord('a') + index)}" for index in range(NUM_CLASSES)]
    student = hf_dis.timm_classifier("test_convnext", NUM_CLASSES, seed=0)
    assert student.config.id2label[0] == "LABEL_0"
    trainer = DistillationTrainer(
        model=student,
        args=make_args(tmp_path, sampler="full"),
        teacher=timm_model("test_resnet", seed=1),
        train_dataset=labelled_images(list(range(8)), names),
    )
    trainer.train()
    trainer.save_model()
    saved = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert [saved.config.id2label[index] for index in range(NUM_CLASSES)] == names
    digits = [str(index) for index in range(NUM_CLASSES)]  # an image folder of digits: names like placeholders
    trainer = DistillationTrainer(
        model=hf_dis.timm_classifier("test_convnext", NUM_CLASSES, seed=0),
        args=make_args(tmp_path, sampler="full", overwrite_output_dir=True),
        teacher=timm_model("test_resnet", seed=1),
        train_dataset=labelled_images(list(range(8)), digits),
    )
    assert trainer.model.config.id2label[3] == "3"  # what pipeline("image-classification") answers, not LABEL_3


def test_a_teacher_whose_classes_are_in_another_order_is_an_error(tmp_path):
    names = [f"c{index}" for index in range(NUM_CLASSES)]
    teacher = hf_dis.timm_classifier("test_resnet", NUM_CLASSES, seed=1)
    teacher.config.id2label = dict(enumerate(reversed(names)))
    with pytest.raises(ValueError, match="same classes in a different order \\(class 0 is 'c19' for the teacher and "):
        DistillationTrainer(
            model=timm_model(),
            args=make_args(tmp_path),
            teacher=teacher,
            train_dataset=labelled_images(list(range(8)), names),
        )
    with pytest.raises(ValueError, match="same classes in a different order"):  # nor can its logits be cached
        hf_dis.data.cache_teacher_logits(teacher, labelled_images(list(range(8)), names), lambda image: image, top_r=4)
    teacher.config.id2label = {index: name.upper() for index, name in enumerate(names)}  # the same names: runs
    trainer = DistillationTrainer(
        model=timm_model(),
        args=make_args(tmp_path),
        teacher=teacher,
        train_dataset=labelled_images(list(range(8)), names),
    )
    assert trainer.model.config.id2label[3] == "C3"
    with pytest.raises(ValueError, match="the training data names 21 classes; the student predicts 20"):
        DistillationTrainer(
            model=timm_model(),
            args=make_args(tmp_path),
            teacher=timm_model("test_resnet", seed=1),
            train_dataset=labelled_images([0], [*names, "x"]),
        )


def test_class_names_agree_or_say_where_they_do_not():
    agreed = hf_dis.models.agreed_class_names
    assert agreed({"teacher": None, "student": None}) is None
    assert agreed({"teacher": ["Cat ", "dog"], "training data": ["cat", "Dog"]}) == ["Cat ", "dog"]
    with pytest.raises(
        ValueError,
        match="name different classes \\(class 1 is 'dog' for the teacher and 'fox' for the student; 1 of 3 differ\\)",
    ):
        agreed({"teacher": ["cat", "dog", "owl"], "student": ["cat", "fox", "owl"]})
    with pytest.raises(ValueError, match="2 of the 3 names are in both, so these are two different tasks"):
        agreed({"teacher": ["cat", "dog", "owl"], "student": ["cat", "fox", "owl"]})  # not "relabel"
    with pytest.raises(ValueError, match="same classes under other names, give the models the data's names"):
        agreed({"teacher": ["cat", "dog"], "student": ["chat", "chien"]})  # nothing in common: maybe other names
    with pytest.raises(ValueError, match="the teacher names 2 classes and the training data 3"):
        agreed({"teacher": ["cat", "dog"], "student": None, "training data": ["cat", "dog", "owl"]})
    # placeholders carry no names: transformers' defaults and plain indices
    assert hf_dis.models.model_class_names(tiny_hf("resnet")) is None
    model = tiny_hf("resnet", num_labels=3)
    model.config.id2label = {0: "0", 1: "1", 2: "2"}
    assert hf_dis.models.model_class_names(model) is None
    model.config.id2label = {0: "cat", 1: "dog", 2: "owl"}
    assert hf_dis.models.model_class_names(model) == ["cat", "dog", "owl"]
    assert hf_dis.models.model_class_names(model, num_classes=2) is None  # the names of a head since replaced
    assert not hf_dis.models.set_class_names(model, ["a", "b", "c"])  # a model's own names stay
    assert hf_dis.models.set_class_names(model, ["a", "b"])  # unless they are a replaced head's
    assert model.config.label2id == {"a": 0, "b": 1}


def test_dataset_without_labels(tmp_path):
    data = RandomImages(with_labels=False)
    trainer = DistillationTrainer(
        model=timm_model(), args=make_args(tmp_path), teacher=timm_model("test_resnet", seed=1), train_dataset=data
    )
    with pytest.raises(ValueError, match="no 'labels'.*set alpha=0"):
        trainer.train()
    assert not any((tmp_path / "out").iterdir())  # Trainer.__init__ makes the folder; nothing is written in it
    # alpha = 0: label-free distillation is allowed, and prediction without labels works for a timm student.
    args = make_args(tmp_path, alpha=0.0)
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=data
    )
    trainer.train()
    assert "ce_loss" not in trainer.state.log_history[0]
    predictions = trainer.predict(RandomImages(6, with_labels=False)).predictions
    assert predictions.shape == (6, NUM_CLASSES)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampler": "full", "num_sampled": 10}, "sampler='full' uses every class"),
        ({"sampler": "uniform", "dis_refit_every": 5}, "dis_refit_every applies to sampler dis"),
        ({"sampler": "dis", "proposal_temperature": 2.0}, "proposal_temperature applies to sampler ftis or topk"),
        ({"force_label": False, "alpha": 0.5}, "force_label=False contradicts alpha=0.5"),
        ({"num_sampled": 2.5}, "num_sampled must be an integer >= 1 or a fraction"),
        ({"sampler": "nope"}, "Unknown sampler 'nope'"),
        ({"sample_scope": "rows"}, "sample_scope must be one of"),
        ({"alpha": 1.5}, r"alpha must be in \[0.0, 1.0\], got 1.5"),
        ({"kd_weight": -0.5}, r"kd_weight must be >= 0 \(or unset for 1 - alpha\), got -0.5"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"kd_divergence": "reverse"}, "kd_divergence must be one of"),
        ({"kd_divergence": "symmetric", "kd_estimator": "horvitz_thompson"}, "self_normalized estimator only"),
    ],
)
def test_contradicting_options(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        DistillationArguments(output_dir=str(tmp_path), **options)


def test_sampler_options_reach_the_sampler(tmp_path):
    args = make_args(
        tmp_path,
        sampler="dis",
        num_sampled=0.25,
        dis_refit_every=7,
        dis_prior_min_weight=0.6,
        sample_scope="batch",
        force_teacher_topk=2,
    )
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1))
    sampler = trainer.sampler
    assert (sampler.name, sampler.num_sampled, sampler.refit_every, sampler.prior_min_weight) == ("dis", 5, 7, 0.6)
    assert (sampler.scope, sampler.force_teacher_topk) == ("batch", 2)
    ftis = DistillationTrainer(
        model=timm_model(),
        args=make_args(tmp_path, sampler="ftis", temperature=4.0),
        teacher=timm_model("test_resnet", seed=1),
    ).sampler
    assert ftis.proposal_temperature == 4.0 and ftis.num_sampled == 2  # default K: a tenth of 20 classes


def test_arguments_from_command_line_and_yaml(tmp_path):
    parser = HfArgumentParser(DistillationArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--sampler",
            "ftis",
            "--num_sampled",
            "64",
            "--temperature",
            "1.5",
            "--sample_scope",
            "batch",
            "--no_log_q_correction",
        ]
    )
    assert (args.sampler, args.num_sampled, args.temperature, args.sample_scope) == ("ftis", 64, 1.5, "batch")
    assert isinstance(args.num_sampled, int) and args.log_q_correction is False
    assert args.remove_unused_columns is False and args.label_names == ["labels"]
    config = tmp_path / "distil.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path), "num_sampled": 0.05, "alpha": 0.0}))
    (args,) = parser.parse_yaml_file(str(config))
    assert (args.sampler, args.num_sampled, args.alpha, args.sample_scope) == ("auto", 0.05, 0.0, "per_example")


# --- evaluation and metrics --------------------------------------------------------------------------------------


def test_evaluate_uses_full_logits_with_accuracy(tmp_path):
    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = DistillationTrainer(
        model=timm_model(),
        args=make_args(tmp_path, num_sampled=5),
        teacher=timm_model("test_resnet", seed=1),
        train_dataset=RandomImages(),
        eval_dataset=RandomImages(10, seed=3),
        compute_metrics=accuracy,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert {"eval_loss", "eval_kd_loss", "eval_ce_loss"} <= set(metrics)
    predictions = trainer.predict(RandomImages(10, seed=3)).predictions
    assert predictions.shape == (10, NUM_CLASSES)  # full classifier at evaluation


def test_evaluation_with_the_librarys_metrics_accumulates_ranked_classes_not_logits(tmp_path):
    """classification_metrics needs each example's top classes only: the trainer reduces every batch to [B, 5] class
    ids before accumulating (O(N k) memory, not O(N C)), and the metrics equal those computed from the logits."""
    from transformers import EvalPrediction

    from hf_dis.metrics import classification_metrics

    evaluation = RandomImages(10, seed=3)
    trainer = DistillationTrainer(
        model=timm_model(),
        args=make_args(tmp_path, num_sampled=5),
        teacher=timm_model("test_resnet", seed=1),
        train_dataset=RandomImages(),
        eval_dataset=evaluation,
        compute_metrics=classification_metrics,
    )
    trainer.train()
    output = trainer.predict(evaluation)
    assert output.predictions.shape == (10, 5) and output.predictions.dtype.kind == "i"  # what was accumulated
    with torch.no_grad():
        logits = trainer.model.eval()(evaluation.images.to(trainer.args.device)).logits.cpu()
    expected = classification_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=output.label_ids))
    assert {"accuracy": output.metrics["test_accuracy"], "top5": output.metrics["test_top5"]} == expected


def test_probe_steps_count_optimizer_steps_not_micro_batches(tmp_path):
    args = make_args(
        tmp_path,
        sampler="dis",
        num_sampled=5,
        max_steps=4,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=2,
    )
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages()
    )
    trainer.train()
    assert trainer.sampler.num_updates == 2  # steps 0 and 2, each averaging its two micro-batches


@pytest.mark.parametrize(
    ("logging", "computed_at"),
    [
        ({"logging_steps": 2}, [2, 4, 5]),
        ({"logging_steps": 3, "logging_first_step": True}, [1, 3, 5]),
        ({"logging_strategy": "no"}, []),
    ],
)
def test_sampled_set_statistics_are_computed_on_the_logged_steps_only(tmp_path, monkeypatch, logging, computed_at):
    """The steps the Trainer logs after, and the last (step 5), whose statistics the end-of-training log carries."""
    import hf_dis.trainer.trainer as trainer_module

    original, computed = trainer_module.sampled_set_stats, []

    def counted(*args, **kwargs):
        computed.append(trainer.state.global_step + 1)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "sampled_set_stats", counted)
    args = make_args(tmp_path, sampler="uniform", num_sampled=5, max_steps=5, **logging)
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages()
    )
    trainer.train()
    assert computed == computed_at
    assert [log["step"] for log in trainer.state.log_history if "teacher_mass" in log] == computed_at


# --- two processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_on_two_processes_and_one(tmp_path, script: str, two: str) -> None:
    """tests/scripts/`script` under accelerate launch (2 gloo ranks on CPU, batch 4 each) into tmp_path/`two`, and as
    one process (batch 8) into tmp_path/one."""
    path = str(ROOT / "tests" / "scripts" / script)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for command, out in ((launch + [path, str(tmp_path / two), "4"], two),
                         ([sys.executable, path, str(tmp_path / "one"), "8"], "one")):  # fmt: skip
        (tmp_path / out).mkdir()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
        assert result.returncode == 0, result.stderr[-4000:]


def test_two_processes_share_the_sampler_state_and_match_one_process(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 runs 2 gloo ranks on CPU (--cpu would silently start one).

    DIS: both ranks end with the same proposal and the same weights. Full KD: 2 processes x batch 4 end where 1 process
    x batch 8 ends (the loss is normalised over the global batch, and DDP's gradient average is undone)."""
    run_on_two_processes_and_one(tmp_path, "ddp_distil.py", "ddp")

    def load(out, name):
        return json.loads((tmp_path / out / f"{name}.json").read_text())

    ranks = [load("ddp", f"dis-rank{rank}") for rank in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 4
    assert ranks[0]["sampler"]["num_updates"] == 2
    assert ranks[0]["sampler"]["mixture"] == ranks[1]["sampler"]["mixture"]
    assert ranks[0]["sampler"]["interaction"] == ranks[1]["sampler"]["interaction"]
    assert ranks[0]["parameter_checksum"] == ranks[1]["parameter_checksum"]  # DDP kept the replicas identical
    assert ranks[0]["parameter_checksum"] != pytest.approx(ranks[0]["initial_checksum"], rel=1e-6)

    ddp, one = load("ddp", "full-rank0"), load("one", "full-rank0")
    assert one["world_size"] == 1 and ddp["global_step"] == one["global_step"] == 3
    moved = abs(one["parameter_checksum"] - one["initial_checksum"])
    assert abs(ddp["parameter_checksum"] - one["parameter_checksum"]) < 1e-4 * moved


def test_a_classifier_sharded_over_two_processes_trains_saves_and_resumes_as_one_process(tmp_path):
    """classifier_parallel=True, 2 gloo ranks x batch 4, each holding half the classifier's rows, against one process x
    batch 8 with the whole classifier: DIS (per-example draws, probes, row-sparse momentum and weight decay, gradient
    clipping over the shards) and full KD (2 accumulated micro-batches a step) log the same losses and gradient norms
    and end with the same weights; the saved folder is one ordinary model (the rows gathered) that predicts as the
    student of one process; a run stopped at step 2 and resumed from its checkpoint ends where the straight run ends."""
    run_on_two_processes_and_one(tmp_path, "sharded_distil.py", "sharded")

    def load(out, name):
        return json.loads((tmp_path / out / f"{name}.json").read_text())

    for run in ("dis", "dis-resumed", "full"):
        ranks, one = [load("sharded", f"{run}-rank{rank}") for rank in (0, 1)], load("one", f"{run}-rank0")
        assert ranks[0]["world_size"] == 2 and one["world_size"] == 1
        assert ranks[0]["backbone_checksum"] == ranks[1]["backbone_checksum"]  # DDP kept the backbones identical
        assert ranks[0]["backbone_checksum"] == pytest.approx(one["backbone_checksum"], rel=1e-7), run
        assert ranks[0]["losses"] == pytest.approx(one["losses"], rel=1e-5), run
        assert ranks[0]["grad_norms"] == pytest.approx(one["grad_norms"], rel=1e-5), run
        assert len(one["losses"]) == (3 if run == "full" else 4)
        for key in ("eval_loss", "eval_accuracy", "eval_top5", "eval_kd_loss"):  # top-5 merged over the shards
            assert ranks[0]["eval"][key] == pytest.approx(one["eval"][key], rel=1e-5, abs=2e-6), (run, key)  # 6 digits
        if run != "full":
            assert ranks[0]["sampler"]["num_updates"] == one["sampler"]["num_updates"] == 2
            for key, values in one["sampler"]["mixture"].items():
                assert ranks[0]["sampler"]["mixture"][key] == pytest.approx(values, rel=1e-5), (run, key)
        sharded = AutoModelForImageClassification.from_pretrained(tmp_path / "sharded" / run / "final")
        whole = AutoModelForImageClassification.from_pretrained(tmp_path / "one" / run / "final")
        assert sharded.timm_model.get_classifier().weight.shape == (NUM_CLASSES, sharded.timm_model.num_features)
        images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(sharded.eval()(images).logits, whole.eval()(images).logits)
    straight, resumed = load("sharded", "dis-rank0"), load("sharded", "dis-resumed-rank0")
    assert resumed["backbone_checksum"] == straight["backbone_checksum"] and resumed["losses"] == straight["losses"]
    checkpoint = tmp_path / "sharded" / "dis" / "checkpoint-2"
    assert {"classifier_optimizer-rank0-of-2.pt", "classifier_optimizer-rank1-of-2.pt"} <= set(os.listdir(checkpoint))
    assert "the classifier sharded over 2 processes" in (tmp_path / "sharded" / "dis" / "README.md").read_text()


def test_a_sharded_classifier_refuses_what_it_cannot_do(tmp_path):
    from hf_dis.heads.sharded import class_shard
    from hf_dis.trainer import ReIDDistillationArguments
    from hf_dis.trainer.sharded_classifier import load_shard_optimizer_state

    with pytest.raises(ValueError, match="classifier_parallel=True does not support classifier_optimizer='dense'"):
        make_args(tmp_path, classifier_parallel=True)
    with pytest.raises(ValueError, match="does not support kd_divergence='symmetric': set kd_divergence='forward'"):
        make_args(tmp_path, classifier_parallel=True, classifier_optimizer="row_sparse", sampler="auto",
                  kd_divergence="symmetric")  # fmt: skip
    with pytest.raises(ValueError, match="even_batches=False: set accelerator_config's even_batches=True"):
        make_args(tmp_path, classifier_parallel=True, classifier_optimizer="row_sparse",
                  accelerator_config={"even_batches": False})  # fmt: skip
    with pytest.raises(ValueError, match="not supported by the re-ID trainer yet"):
        ReIDDistillationArguments(output_dir=str(tmp_path / "reid"), classifier_parallel=True,
                                  classifier_optimizer="row_sparse", report_to="none", use_cpu=True)  # fmt: skip
    args = make_args(tmp_path, classifier_parallel=True, classifier_optimizer="row_sparse")
    with pytest.raises(ValueError, match="this run has 1: launch it with accelerate launch --num_processes N"):
        DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
                            train_dataset=RandomImages(4))  # fmt: skip
    # A checkpoint whose classifier was sharded over 4 processes, resumed with 2; one never sharded.
    saved = tmp_path / "checkpoint-2"
    saved.mkdir()
    torch.save({}, saved / "classifier_optimizer-rank0-of-4.pt")
    with pytest.raises(ValueError, match="sharded over 4 processes; this run has 2.*--num_processes 4"):
        load_shard_optimizer_state(saved, class_shard(NUM_CLASSES, 0, 2))
    (saved / "classifier_optimizer-rank0-of-4.pt").unlink()
    with pytest.raises(ValueError, match="not saved with classifier_parallel=True"):
        load_shard_optimizer_state(saved, class_shard(NUM_CLASSES, 0, 2))


# --- the teacher cache ------------------------------------------------------------------------------------------


def test_teacher_cache_rebuilds_the_teachers_logits(tmp_path):
    from hf_dis.data import cache_teacher_logits, dense_teacher_logits

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = hf_dis.data.image_transform(teacher, training=False, image_size=32)
    data = image_dataset(6)
    pixels = torch.stack([transform(image) for image in data["image"]])
    with torch.no_grad():
        live = teacher(pixels)
    for top_r in (NUM_CLASSES, 5):
        columns = cache_teacher_logits(teacher, data, transform, top_r=top_r, batch_size=4).with_format("torch")[:]
        dense = dense_teacher_logits(
            columns["teacher_top_classes"], columns["teacher_top_logits"], columns["teacher_tail_logit"], NUM_CLASSES
        )
        top = live.topk(top_r, dim=1).indices
        torch.testing.assert_close(dense.gather(1, top), live.gather(1, top), rtol=1e-5, atol=1e-5)
        in_tail = torch.ones_like(live, dtype=torch.bool).scatter_(1, top, False)
        if top_r == NUM_CLASSES:
            torch.testing.assert_close(dense, live, rtol=1e-5, atol=1e-5)
        else:  # the tail keeps its probability mass (at T = 1), spread evenly
            torch.testing.assert_close(
                torch.logsumexp(dense.masked_fill(~in_tail, -torch.inf), 1),
                torch.logsumexp(live.masked_fill(~in_tail, -torch.inf), 1),
            )
    with pytest.raises(ValueError, match="top_r must be >= 1"):
        cache_teacher_logits(teacher, data, transform, top_r=0)


def test_distilling_from_the_cache_equals_the_live_teacher_without_running_it(tmp_path, monkeypatch):
    from hf_dis.data import CachedTeacherLogits, cache_teacher_logits, image_transform, labelled_batches

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = image_transform(teacher, training=False, image_size=32)  # deterministic: the same view both ways
    data = image_dataset(12)
    cached = cache_teacher_logits(teacher, data, transform, top_r=NUM_CLASSES)

    def train(dataset, name):
        calls = []
        hook = teacher.register_forward_hook(lambda *_: calls.append(1))
        args = make_args(tmp_path, output_dir=str(tmp_path / name), sampler="dis", num_sampled=5, max_steps=3)
        trainer = DistillationTrainer(
            model=timm_model(), args=args, teacher=teacher, train_dataset=dataset.with_transform(
                labelled_batches(transform))
        )  # fmt: skip
        trainer.train()
        hook.remove()
        return trainer, len(calls)

    live, live_calls = train(data, "live")
    dense_calls = []
    dense = CachedTeacherLogits.dense
    monkeypatch.setattr(CachedTeacherLogits, "dense", lambda self: dense_calls.append(1) or dense(self))
    monkeypatch.setattr(hf_dis.data.cached_logits, "DENSE_LOOKUP_MAX_ENTRIES", 0)  # as with very many classes
    from_cache, cache_calls = train(cached, "cache")
    assert live_calls == 1 + 3 and cache_calls == 1  # the pre-training check only: no teacher forward per step
    assert len(dense_calls) == 2  # [B, C] teacher logits on the two probe steps only, not on the sampled one
    for (name, p), q in zip(live.model.named_parameters(), from_cache.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    assert live.sampler.state_dict()["num_updates"] == from_cache.sampler.state_dict()["num_updates"] == 2


def test_labelled_dataset_reads_the_cache_columns_as_labelled_batches_does(tmp_path):
    """The cache columns read as arrays from the arrow table hold what labelled_batches makes of them, in the same
    dtypes, after a save/load round trip, a shuffle and a selection (each row keeps its cache position); the cache's
    record survives; a dataset without a cache is transformed as labelled_batches does."""
    from transformers import default_data_collator

    from hf_dis.data import (
        cache_teacher_logits,
        image_transform,
        labelled_batches,
        labelled_dataset,
        teacher_cache_info,
    )

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = image_transform(teacher, training=False, image_size=32)
    data = image_dataset(12)
    cache_teacher_logits(teacher, data, transform, top_r=5, batch_size=5).save_to_disk(tmp_path / "cached")
    cached = datasets.load_from_disk(tmp_path / "cached")
    fast = labelled_dataset(cached, transform)
    assert teacher_cache_info(fast) == teacher_cache_info(cached) is not None
    slow = cached.with_transform(labelled_batches(transform))
    views = ((fast, slow, [9, 0, 4, 4, 11]), (fast.shuffle(seed=3).select(range(2, 9)), slow.shuffle(seed=3).select(
        range(2, 9)), [6, 1, 1, 3]))  # fmt: skip
    for fast_view, slow_view, rows in views:
        fast_batch = default_data_collator(fast_view.__getitems__(rows))
        slow_batch = default_data_collator(slow_view.__getitems__(rows))
        assert set(fast_batch) == set(slow_batch) == {"pixel_values", "labels", *hf_dis.data.TEACHER_CACHE_COLUMNS}
        for key, value in slow_batch.items():
            assert fast_batch[key].dtype == value.dtype, key
            torch.testing.assert_close(fast_batch[key], value, rtol=0, atol=0, msg=key)
    plain = labelled_dataset(data, transform)
    assert plain.column_names == data.column_names
    torch.testing.assert_close(plain[0:3]["pixel_values"], data.with_transform(labelled_batches(transform))[0:3][
        "pixel_values"])  # fmt: skip


def test_distilling_from_the_cache_needs_no_teacher(tmp_path):
    """Without a teacher, training from the cache gives the same student as with one; evaluation on uncached data
    reports the cross-entropy; the card describes the teacher the cache recorded (kept through save_to_disk)."""
    from hf_dis.data import cache_teacher_logits, image_transform, labelled_batches, teacher_cache_info

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = image_transform(teacher, training=False, image_size=32)
    data = image_dataset(12)
    cache_teacher_logits(teacher, data, transform, top_r=5).save_to_disk(tmp_path / "cached")
    cached = datasets.load_from_disk(tmp_path / "cached")
    info = teacher_cache_info(cached)
    assert info.pop("transform") == repr(transform)
    assert info == {"teacher": "test_resnet (timm)", "architecture": "test_resnet (timm)",
                    "parameters": sum(p.numel() for p in teacher.parameters()), "num_classes": NUM_CLASSES,
                    "class_names": None, "top_r": 5, "num_views": None, "seed": None,
                    "embedding_size": None, "image_column": "image"}  # fmt: skip
    assert teacher_cache_info(data) is None

    def train(name, with_teacher):
        args = make_args(tmp_path, output_dir=str(tmp_path / name), sampler="dis", num_sampled=5, max_steps=3,
                         per_device_eval_batch_size=4)  # fmt: skip
        trainer = DistillationTrainer(
            model=timm_model(), args=args, teacher=teacher if with_teacher else None,
            train_dataset=cached.with_transform(labelled_batches(transform)),
            eval_dataset=data.with_transform(labelled_batches(transform)),
        )  # fmt: skip
        trainer.train()
        return trainer

    with_teacher, without = train("with", True), train("without", False)
    assert without.teacher is None
    for (name, p), q in zip(with_teacher.model.named_parameters(), without.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    metrics = without.evaluate()
    assert metrics["eval_ce_loss"] == pytest.approx(metrics["eval_loss"]) and "eval_kd_loss" not in metrics
    card = (tmp_path / "without" / "README.md").read_text()
    assert "distilled from **test_resnet (timm)** (test_resnet (timm))" in card
    assert "cached once: top 5 classes per example, on the un-augmented image" in card

    args = make_args(tmp_path, output_dir=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="or train on a dataset with cached teacher logits"):
        DistillationTrainer(
            model=timm_model(), args=args, train_dataset=data.with_transform(labelled_batches(transform))
        )
    wrong = cache_teacher_logits(timm_model("test_resnet", num_classes=2 * NUM_CLASSES), data, transform, top_r=5)
    with pytest.raises(ValueError, match="cache was made by a teacher of 40 classes .* the student predicts 20"):
        DistillationTrainer(model=timm_model(), args=args, train_dataset=wrong.with_transform(
            labelled_batches(transform)))  # fmt: skip
    wrong.info.description = ""  # a cache without its record: every row's class ids are still checked
    trainer = DistillationTrainer(model=timm_model(), args=args, train_dataset=wrong.with_transform(
        labelled_batches(transform)))  # fmt: skip
    with pytest.raises(ValueError, match="cached teacher class ids run from .* outside the student's \\[0, 20\\)"):
        trainer.train()


def augmenting_transform(model):
    config = hf_dis.data.data_config(model, image_size=32)
    return hf_dis.data.padded_crop_transform(
        training=True, image_size=(32, 32), mean=config["mean"], std=config["std"], random_erasing=0.5
    )


def test_seeded_view_repeats_its_augmentation_and_leaves_the_random_generators_alone():
    import random

    from hf_dis.data import seeded_view

    transform = augmenting_transform(timm_model("test_resnet"))
    image = image_dataset(1)["image"][0]
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    views = [seeded_view(transform, image, seed) for seed in range(6)]
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    for seed, view in enumerate(views):
        assert torch.equal(seeded_view(transform, image, seed), view)
    assert len({view.numpy().tobytes() for view in views}) > 1  # the seeds do change the augmentation


def test_teacher_cache_with_augmented_views_holds_the_teachers_logits_on_each_view():
    from hf_dis.data import cache_teacher_logits, dense_teacher_logits, seeded_view
    from hf_dis.data.teacher_cache import view_seed

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = augmenting_transform(teacher)
    data = image_dataset(5)
    cached = cache_teacher_logits(teacher, data, transform, top_r=NUM_CLASSES, batch_size=2, num_views=3, seed=7)
    columns = cached.with_format("torch")[:]
    assert columns["teacher_top_classes"].shape == (5, 3, NUM_CLASSES) and columns["teacher_tail_logit"].shape == (5, 3)
    assert columns["teacher_view_seeds"].tolist() == [[view_seed(7, i, v) for v in range(3)] for i in range(5)]
    for index, image in enumerate(data["image"]):
        seeds = columns["teacher_view_seeds"][index].tolist()
        with torch.no_grad():
            live = teacher(torch.stack([seeded_view(transform, image, seed) for seed in seeds]))
        dense = dense_teacher_logits(
            columns["teacher_top_classes"][index], columns["teacher_top_logits"][index],
            columns["teacher_tail_logit"][index], NUM_CLASSES,
        )  # fmt: skip
        torch.testing.assert_close(dense, live, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(columns["teacher_top_logits"][:, 0], columns["teacher_top_logits"][:, 1])
    with pytest.raises(ValueError, match="several augmented views"):
        dense_teacher_logits(
            columns["teacher_top_classes"], columns["teacher_top_logits"], columns["teacher_tail_logit"], NUM_CLASSES
        )
    with pytest.raises(ValueError, match="num_views must be >= 1"):
        cache_teacher_logits(teacher, data, transform, top_r=5, num_views=0)


def test_distilling_from_cached_views_gives_the_student_the_view_the_teacher_saw(tmp_path):
    """Through the Trainer's own data path: every training batch's cached logits are the teacher's logits on that
    batch's (augmented) pixels, several views are used, and the teacher is not run per step."""
    from hf_dis.data import cache_teacher_logits, dense_teacher_logits, labelled_batches

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = augmenting_transform(teacher)
    data = image_dataset(12)
    cached = cache_teacher_logits(teacher, data, transform, top_r=NUM_CLASSES, num_views=4)
    checked, views_seen = [], set()

    class CheckingTrainer(DistillationTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                with torch.no_grad():
                    live = teacher(inputs["pixel_values"])
                cached_logits = dense_teacher_logits(
                    inputs["teacher_top_classes"], inputs["teacher_top_logits"], inputs["teacher_tail_logit"],
                    NUM_CLASSES,
                )  # fmt: skip
                checked.append(torch.allclose(cached_logits, live, rtol=1e-4, atol=1e-5))
                views_seen.update(inputs["teacher_top_logits"][:, 0].tolist())
            return super().compute_loss(model, inputs, *args, **kwargs)

    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    args = make_args(tmp_path, sampler="dis", num_sampled=5, max_steps=6)
    trainer = CheckingTrainer(
        model=timm_model(), args=args, teacher=teacher, train_dataset=cached.with_transform(labelled_batches(transform))
    )
    trainer.train()
    hook.remove()
    assert len(checked) == 6 and all(checked)
    assert len(calls) == 1 + len(checked)  # the pre-training check, then only this test's own checks
    assert len(views_seen) > len(data)  # more distinct teacher targets than images: more than one view per image


@pytest.mark.parametrize(("top_r", "warned"), [(5, True), (NUM_CLASSES, False)])
def test_a_cache_with_fewer_ranks_than_dis_reads_is_named(top_r, warned, tmp_path, caplog):
    """DIS draws from its top `rank_limit` ranks (here all C): a cache holding fewer gets a warning, before training,
    that says what the draws lose and the top_r to cache with; a cache that holds them all gets none."""
    from hf_dis.data import cache_teacher_logits, image_transform, labelled_batches

    teacher = timm_model("test_resnet", seed=1).eval()
    transform = image_transform(teacher, training=False, image_size=32)
    cached = cache_teacher_logits(teacher, image_dataset(8), transform, top_r=top_r)
    args = make_args(tmp_path, sampler="dis", num_sampled=3, max_steps=1)
    trainer = DistillationTrainer(
        model=timm_model(), args=args, train_dataset=cached.with_transform(labelled_batches(transform))
    )
    with caplog.at_level("WARNING", logger="hf_dis.trainer.trainer"):
        trainer.train()
    messages = [record.getMessage() for record in caplog.records if record.name == "hf_dis.trainer.trainer"]
    if warned:
        assert len(messages) == 1
        assert (
            f"holds the top 5 classes per example, but the dis sampler draws from the top {NUM_CLASSES}" in messages[0]
        )
        assert f"--top_r {NUM_CLASSES}" in messages[0]
        assert f"rebuilds the [B, C] teacher logits (4 x {NUM_CLASSES} float32: 0 MB at this batch)" in messages[0]
    else:
        assert messages == []


@pytest.mark.parametrize(
    ("dis_ms", "chosen", "classifier_optimizer"),
    [(4.0, "dis", "dense"), (8.0, "dis", "row_sparse"), (8.5, "full", "dense"), (12.0, "full", "row_sparse")],
)
def test_auto_takes_dis_only_where_its_head_step_saves_a_fifth(
    dis_ms, chosen, classifier_optimizer, tmp_path, monkeypatch, caplog
):
    """sampler="auto" times the head once (here the timer is replaced: 10 ms over all classes), classifier updates
    included as the trainer runs them, takes DIS at up to 0.8x the full head's time, else full KD, and says so in a
    warning-level line (shown by default) and the model card."""
    timed = []

    def head_step_ms(num_classes, width, batch_size, sampler=None, update=None, **options):
        timed.append((None if sampler is None else sampler.name, update))
        return 10.0 if sampler is None else dis_ms

    monkeypatch.setattr("hf_dis.trainer.auto_sampler.head_step_ms", head_step_ms)
    args = make_args(
        tmp_path, sampler="auto", num_sampled=3, max_steps=1, classifier_optimizer=classifier_optimizer
    )
    with caplog.at_level("WARNING", logger="hf_dis.trainer.trainer"):
        trainer = DistillationTrainer(
            model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(8)
        )
    dis_update = "row_sparse_sgd" if classifier_optimizer == "row_sparse" else "sgd"
    assert timed == [(None, "sgd"), ("dis", dis_update)] and trainer.sampler.name == chosen
    assert trainer.sampler.num_sampled == (3 if chosen == "dis" else NUM_CLASSES)
    expected = f"auto chose {chosen}: the head step took {dis_ms:g} ms with DIS (K = 3) and 10 ms over all"
    assert expected in trainer.sampler_choice and any(expected in record.getMessage() for record in caplog.records)
    trainer.train()
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| sampler choice | {expected}" in card


def test_an_explicit_sampler_is_never_timed_or_changed(tmp_path, monkeypatch):
    monkeypatch.setattr("hf_dis.trainer.auto_sampler.head_step_ms", lambda *a, **k: pytest.fail("timed"))
    trainer = DistillationTrainer(
        model=timm_model(), args=make_args(tmp_path, sampler="dis", num_sampled=3, max_steps=1),
        teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(8),
    )  # fmt: skip
    assert trainer.sampler.name == "dis" and trainer.sampler_choice is None
    with pytest.raises(ValueError, match=r"dis_refit_every applies to sampler dis or auto"):
        make_args(tmp_path, sampler="full", dis_refit_every=5)


@pytest.mark.parametrize(("num_sampled", "warned"), [(5, True), (4, False)])
def test_an_explicit_dis_whose_draws_reach_every_class_runs_and_says_so(num_sampled, warned, tmp_path, caplog):
    """Explicit means explicit: DIS runs where B x K >= C, with one line giving both numbers."""
    args = make_args(tmp_path, sampler="dis", num_sampled=num_sampled, max_steps=1)  # batch 4, 20 classes
    with caplog.at_level("WARNING", logger="hf_dis.trainer.trainer"):
        trainer = DistillationTrainer(
            model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(8)
        )
    messages = [r.getMessage() for r in caplog.records if "cannot save time" in r.getMessage()]
    assert trainer.sampler.name == "dis"
    if warned:
        expected = f"draws 20 classes a step (K = {num_sampled} per example x batch 4)"
        assert len(messages) == 1 and expected in messages[0]
    else:
        assert messages == []


def test_auto_is_the_default_and_k_defaults_keep_the_draws_below_the_classes():
    from hf_dis.trainer.arguments import default_num_sampled

    assert DistillationArguments(output_dir="x").sampler == "auto"
    assert default_num_sampled(10, 64) == 1  # a tenth of the classes at most
    assert default_num_sampled(1_000, 64) == 64  # the floor of 64, within a tenth
    assert default_num_sampled(100_000, 128) == 195  # C / (4 B): the batch draws at most a quarter of C
    assert default_num_sampled(10**6, 128) == 1024  # the ceiling
    for num_classes, batch_size in ((100_000, 128), (10**6, 256), (20_000, 16)):
        assert batch_size * default_num_sampled(num_classes, batch_size) <= num_classes / 4


def test_a_teacher_folder_brings_its_image_processor_and_is_measured_before_training(tmp_path, caplog):
    """`teacher="FOLDER"` reads the preprocessor_config.json saved beside the model (an explicit
    teacher_processing_class still wins); before the first step the teacher's top-1 on evaluation images, fed as in
    training, is printed and written to the card, with a warning when it is near chance."""
    from transformers import AutoImageProcessor, ViTImageProcessor

    teacher_dir = tmp_path / "teacher"
    tiny_hf("resnet", num_labels=NUM_CLASSES).save_pretrained(teacher_dir)
    processor = ViTImageProcessor(
        image_mean=[0.1, 0.2, 0.3], image_std=[0.9, 0.8, 0.7], size={"height": 20, "width": 20}
    )
    processor.save_pretrained(teacher_dir)
    args = make_args(tmp_path, num_sampled=3, max_steps=1)
    with caplog.at_level("WARNING", logger="hf_dis.trainer.trainer"):
        trainer = DistillationTrainer(
            model=timm_model(), args=args, teacher=str(teacher_dir), train_dataset=RandomImages(8),
            eval_dataset=RandomImages(12, seed=5),
        )  # fmt: skip
        trainer.train()
    assert trainer.teacher_inputs.teacher.mean == (0.1, 0.2, 0.3) and trainer.teacher_inputs.renormalize
    assert trainer.teacher_inputs.image_size == (20, 20)  # the size its processor fixes, not the student's
    assert trainer.teacher_check.endswith("top-1 on 12 evaluation images, fed as in training (20x20)")
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert f"teacher: {trainer.teacher_check}" in messages
    assert "the teacher is near chance" in messages  # a random teacher on random labels
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| teacher before training | {trainer.teacher_check} |" in card
    explicit = AutoImageProcessor.from_pretrained(teacher_dir)
    explicit.image_mean = [0.5, 0.5, 0.5]
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=str(teacher_dir), train_dataset=RandomImages(8),
        teacher_processing_class=explicit,
    )  # fmt: skip
    assert trainer.teacher_inputs.teacher.mean == (0.5, 0.5, 0.5)
    args.teacher_image_size = 24  # an explicit size wins over the processor's
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=str(teacher_dir), train_dataset=RandomImages(8)
    )
    assert trainer.teacher_inputs.image_size == (24, 24)


def test_processor_image_size_reads_what_each_kind_of_processor_fixes():
    from transformers import ConvNextImageProcessor, TimmWrapperImageProcessor, ViTImageProcessor

    from hf_dis.trainer.teacher import processor_image_size

    assert processor_image_size(None) is None
    assert processor_image_size(ViTImageProcessor(size={"height": 64, "width": 48})) == (64, 48)
    assert processor_image_size(ConvNextImageProcessor(size={"shortest_edge": 224})) is None  # aspect kept
    timm_config = {"input_size": [3, 40, 40], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0}
    assert processor_image_size(TimmWrapperImageProcessor(pretrained_cfg=timm_config)) == (40, 40)


def test_the_evaluation_curve_counts_training_time_only_and_survives_a_resume(tmp_path, monkeypatch):
    """EvaluationCurve on a fake clock: evaluations' own runtime is not training time, the clock stops when training
    ends, and a resumed run goes on from its checkpoint's seconds (points after the checkpoint are dropped)."""
    import json
    from types import SimpleNamespace

    from hf_dis.trainer import EvaluationCurve

    clock = [0.0]
    monkeypatch.setattr("hf_dis.trainer.curve.time.perf_counter", lambda: clock[0])
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    curve = EvaluationCurve()
    curve.on_train_begin(args, state, None)
    clock[0], state.global_step = 10.0, 2
    curve.on_evaluate(args, state, None, metrics={"eval_accuracy": 0.5, "eval_runtime": 3.0})
    clock[0] = 12.0
    curve.on_save(args, state, None)
    clock[0], state.global_step = 20.0, 4
    curve.on_evaluate(args, state, None, metrics={"eval_accuracy": 0.6, "eval_runtime": 1.0})
    clock[0] = 25.0
    curve.on_train_end(args, state, None)
    clock[0] = 90.0  # a model card and the final evaluation on the whole test split: not training
    curve.on_evaluate(args, state, None, metrics={"eval_accuracy": 0.7, "eval_runtime": 50.0})
    saved = json.loads((tmp_path / "eval_curve.json").read_text())
    assert saved["metric"] == "eval_accuracy" and saved["checkpoints"] == {"2": 9.0}
    assert saved["points"] == [[7.0, 0.5, 2], [16.0, 0.6, 4], [21.0, 0.7, 4]]
    resumed = EvaluationCurve()
    clock[0], state.global_step = 100.0, 2  # resumed from checkpoint-2
    resumed.on_train_begin(args, state, None)
    clock[0], state.global_step = 105.0, 3
    resumed.on_evaluate(args, state, None, metrics={"eval_rank1": 0.1, "eval_accuracy": 0.8, "eval_runtime": 1.0})
    assert resumed.points == [[7.0, 0.5, 2], [13.0, 0.8, 3]]  # 9 s at the checkpoint + 5 - 1


def test_a_trainer_writes_its_evaluation_curve(tmp_path):
    trainer = DistillationTrainer(
        model=timm_model(), args=make_args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2),
        teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(), eval_dataset=RandomImages(8, seed=2),
        compute_metrics=hf_dis.metrics.classification_metrics,
    )  # fmt: skip
    trainer.train()
    trainer.evaluate()
    import json

    points = json.loads((tmp_path / "out" / "eval_curve.json").read_text())["points"]
    assert [point[2] for point in points] == [2, 4, 4] and points[0][0] <= points[1][0] <= points[2][0]


def test_partial_fc_classes_hold_the_labels_and_uniform_others():
    labels = torch.tensor([7, 3, 7, 11])
    classes, targets = partial_fc_classes(labels, 40, 10, torch.Generator().manual_seed(0))
    assert classes.numel() == 10 and classes.unique().numel() == 10 and classes.max() < 40
    assert torch.equal(classes[targets], labels) and torch.equal(classes[:3], torch.tensor([3, 7, 11]))
    more_labels_than_k = torch.arange(12)
    classes, targets = partial_fc_classes(more_labels_than_k, 40, 5, torch.Generator().manual_seed(0))
    assert torch.equal(classes, more_labels_than_k) and torch.equal(targets, more_labels_than_k)


def test_teacher_with_a_sampled_softmax_trains_only_the_sampled_rows(tmp_path):
    """train-teacher --sampled_classes: one AdamW step (no weight decay) moves exactly the classifier rows
    of its sampled set, and its loss is the cross-entropy over that set; evaluation scores every class."""
    model = build_classifier("test_resnet", NUM_CLASSES, pretrained=False, seed=0)
    head = split_classifier(model).head
    before = head.weight.detach().clone()
    args = ClassificationTeacherArguments(
        output_dir=str(tmp_path / "teacher"), sampled_classes=6, max_steps=1, per_device_train_batch_size=4,
        learning_rate=0.5, weight_decay=0.0, use_cpu=True, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1,
    )  # fmt: skip
    data = RandomImages(size=4)
    trainer = ClassifierTrainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    moved = (head.weight.detach() != before).any(dim=1).nonzero().flatten()
    assert moved.numel() == 6 and set(data.labels.tolist()) <= set(moved.tolist())
    assert trainer.evaluate()["eval_loss"] > 0  # a full forward over every class


def test_resuming_with_changed_settings_is_refused_naming_each(tmp_path):
    """A checkpoint records the run's settings: resuming it with another temperature, K, sampler, alpha, teacher or
    student architecture is refused before anything is written, naming the setting and its old value; with
    resume_with_changed_settings=True the run goes on and its card says what changed."""
    output = tmp_path / "run"

    def trainer(student=None, teacher=None, **changes):
        options = dict(output_dir=str(output), num_sampled=5, max_steps=2, save_steps=1, save_strategy="steps")
        args = make_args(tmp_path, **{**options, "max_steps": 3, **changes}) if changes.pop("longer", False) else \
            make_args(tmp_path, **{**options, **changes})  # fmt: skip
        return DistillationTrainer(model=student or timm_model(), args=args,
                                   teacher=teacher or timm_model("test_resnet", seed=1), train_dataset=RandomImages())

    trainer().train()
    checkpoint = output / "checkpoint-2"
    before = sorted(path.name for path in output.iterdir())
    cases = [
        ({"temperature": 3.0}, "temperature: now 3.0 \\(was 2.0\\)"),
        ({"num_sampled": 7}, "num_sampled: now 7 \\(was 5\\)"),
        ({"sampler": "uniform"}, "sampler: now 'uniform' \\(was 'dis'\\)"),
        ({"alpha": 0.5}, "alpha: now 0.5 \\(was 0.1\\)"),
        ({"student": timm_model("test_resnet")}, "student: now '.*test_resnet.* \\(was '.*test_convnext"),
        ({"teacher": timm_model("test_convnext", seed=3)}, "teacher: now 'ConvNeXt.* \\(was 'ResNet"),
        ({"kd_weight": 2.0}, "kd_weight: now 2.0 \\(was None\\)"),
        ({"kd_divergence": "symmetric"}, "kd_divergence: now 'symmetric' \\(was 'forward'\\)"),
        ({"kd_estimator": "horvitz_thompson"}, "kd_estimator: now 'horvitz_thompson'"),
        ({"log_q_correction": False}, "log_q_correction: now False \\(was True\\)"),
        ({"sample_scope": "batch"}, "sampler_options: now .*'scope': 'batch'"),
        ({"classifier_optimizer": "row_sparse"}, "classifier_optimizer: now 'row_sparse' \\(was 'dense'\\)"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=f"resuming {checkpoint} with other settings .*{message}"):
            trainer(**changes).train(resume_from_checkpoint=str(checkpoint))
        assert sorted(path.name for path in output.iterdir()) == before  # nothing written
    allowed = trainer(temperature=3.0, resume_with_changed_settings=True, longer=True)
    allowed.train(resume_from_checkpoint=str(checkpoint))
    assert allowed.state.global_step == 3
    assert "temperature: now 3.0 (was 2.0)" in (output / "README.md").read_text()


def test_a_resumed_run_logs_the_loss_parts_of_an_uninterrupted_one(tmp_path):
    """Interrupted at step 3 of 4 (logging every 4): the resumed run's log at step 4 averages steps 1-4, as the
    uninterrupted run's does, not only step 4."""

    def run(output_dir, callbacks=(), resume=None):
        args = make_args(tmp_path, output_dir=str(output_dir), sampler="full", max_steps=4, logging_steps=4,
                         save_steps=3, save_strategy="steps")  # fmt: skip
        trainer = DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
                                      train_dataset=RandomImages(24), callbacks=list(callbacks))  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return [log for log in trainer.state.log_history if "kd_loss" in log and "train_runtime" not in log]

    straight = run(tmp_path / "straight")
    assert run(tmp_path / "interrupted", callbacks=[StopAt(3)]) == []  # stopped before its first log
    (resumed,) = run(tmp_path / "interrupted", resume=str(tmp_path / "interrupted" / "checkpoint-3"))
    (straight,) = straight
    assert resumed["step"] == straight["step"] == 4
    for part in ("kd_loss", "ce_loss"):
        assert resumed[part] == pytest.approx(straight[part], rel=1e-5), part


def test_resuming_from_another_teacher_cache_is_refused(tmp_path):
    """A run from one teacher cache, resumed on the cache of another teacher: the checkpoint's recorded cache differs,
    and the resume is refused naming both."""
    from hf_dis.data import cache_teacher_logits, image_transform, labelled_batches

    data = image_dataset(8)
    transform = image_transform(timm_model(), training=False, image_size=32)
    caches = [cache_teacher_logits(timm_model(name, seed=seed).eval(), data, transform, top_r=5)
              for name, seed in (("test_resnet", 1), ("test_convnext", 2))]  # fmt: skip
    args = make_args(tmp_path, sampler="full", save_steps=1, save_strategy="steps")

    def trainer(cache):
        return DistillationTrainer(model=timm_model(), args=args,
                                   train_dataset=cache.with_transform(labelled_batches(transform)))  # fmt: skip

    trainer(caches[0]).train()
    checkpoint = Path(args.output_dir) / "checkpoint-2"
    with pytest.raises(ValueError, match="teacher: now 'cache of test_convnext.* \\(was 'cache of test_resnet"):
        trainer(caches[1]).train(resume_from_checkpoint=str(checkpoint))


def test_imprinting_under_two_processes_adds_their_shares_and_keeps_one_head(tmp_path, monkeypatch):
    """ImprintHeadCallback on 2 gloo ranks, each reading half the images: both ranks end with the same head (rank 0's
    scale), whose directions and centring are those of one process reading every image (this one)."""
    script = ROOT / "tests" / "scripts" / "ddp_imprint.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    (tmp_path / "two").mkdir()
    result = subprocess.run([*launch, str(script), str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    monkeypatch.syspath_prepend(str(script.parent))
    from ddp_imprint import main as imprint_one_process

    (tmp_path / "one").mkdir()
    imprint_one_process(str(tmp_path / "one"))
    ranks = [json.loads((tmp_path / "two" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert ranks[0]["world_size"] == 2 and one["world_size"] == 1
    assert ranks[0]["weight"] == ranks[1]["weight"] and ranks[0]["bias"] == ranks[1]["bias"]
    assert ranks[0]["report"]["classes_imprinted"] == one["report"]["classes_imprinted"] == 6
    for key in ("eval_top1_trained_head", "eval_top1_imprinted"):  # counted over both ranks' shares
        assert ranks[0]["report"][key] == ranks[1]["report"][key] == one["report"][key]
    assert (tmp_path / "two" / "imprint_results.json").is_file()  # written by rank 0
    for run in (ranks[0], one):
        run["directions"] = F.normalize(torch.tensor(run["weight"]), dim=1)
        run["centring"] = torch.tensor(run["bias"]) / run["report"]["scale"]  # -u_c . m
    torch.testing.assert_close(ranks[0]["directions"], one["directions"])
    torch.testing.assert_close(ranks[0]["centring"], one["centring"])
