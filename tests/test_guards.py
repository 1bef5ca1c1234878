"""Nothing lost, nothing silent: divergence, a cache from another teacher, labels checked whole, a reused output
folder, damaged checkpoints and a run killed during a save. Each case asserts the message names the problem and
that the output folder holds nothing new or damaged afterwards."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import (
    NUM_CLASSES,
    RandomImages,
    image_dataset,
    make_args,
    timm_model,
    write_cifar100_release,
    write_py2_pickle,
)
from torch import nn

import hf_dis
from hf_dis import DistillationTrainer, DivergenceError
from hf_dis.data import cache_teacher_logits, image_transform, labelled_batches, load_cifar100
from hf_dis.data.teacher_cache import IMAGE_HASH, TAIL_LOGIT, TOP_CLASSES, TOP_LOGITS
from hf_dis.metrics import classification_metrics
from hf_dis.trainer.run_folder import LOCK_NAME, MARKER_NAME, checkpoint_problem

SCRIPTS = Path(__file__).parent / "scripts"


def teacher():
    return timm_model("test_resnet", seed=1)


def folder_listing(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its modification time in ns: what a refused run must leave as it was."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


class NaNAfter(nn.Module):
    """A teacher that returns NaN logits from its `after`-th call on (the first call is the trainer's check)."""

    def __init__(self, model: nn.Module, after: int) -> None:
        super().__init__()
        self.model, self.after, self.calls = model, after, 0

    def forward(self, pixel_values):
        self.calls += 1
        logits = self.model(pixel_values)
        return logits * float("nan") if self.calls > self.after else logits


# --- divergence ---------------------------------------------------------------------------------------------------


def test_a_diverging_student_stops_and_saves_nothing_non_finite(tmp_path):
    args = make_args(tmp_path, sampler="full", learning_rate=1e9, max_steps=6, save_strategy="steps", save_steps=1)
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=RandomImages(24))
    with pytest.raises(DivergenceError, match=r"learning_rate \(now 1e\+09\)") as error:
        trainer.train()
    assert "diverged" in str(error.value) or "not saving" in str(error.value)
    out = Path(args.output_dir)
    assert not (out / "README.md").exists() and not (out / "model.safetensors").exists()
    for checkpoint in out.glob("checkpoint-*"):  # whatever was saved is finite and whole
        assert checkpoint_problem(checkpoint) is None
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


def test_a_teacher_turning_nan_is_named_and_the_last_checkpoint_kept(tmp_path):
    args = make_args(tmp_path, sampler="dis", num_sampled=5, max_steps=6, save_strategy="steps", save_steps=2)
    nan_teacher = NaNAfter(teacher(), after=1 + 3)  # the check, then steps 1-3 fine, NaN at step 4
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=nan_teacher, train_dataset=RandomImages(24))
    with pytest.raises(DivergenceError, match=r"at step 4 .*the teacher's logits on this batch hold NaN"):
        trainer.train()
    out = Path(args.output_dir)
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert not (out / "README.md").exists()
    assert trainer.state.log_history == [] or all(
        np.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry
    )


def test_saving_non_finite_weights_is_refused(tmp_path):
    args = make_args(tmp_path, sampler="full")
    student = timm_model()
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher(), train_dataset=RandomImages())
    with torch.no_grad():
        next(student.parameters()).fill_(float("inf"))
    with pytest.raises(DivergenceError, match="holds NaN or inf"):
        trainer.save_model()
    assert folder_listing(Path(args.output_dir)) == {}


# --- the cache knows its teacher ----------------------------------------------------------------------------------


def test_a_cache_from_a_teacher_of_other_classes_is_refused(tmp_path):
    small_teacher = timm_model("test_resnet", num_classes=10, seed=1).eval()
    transform = image_transform(small_teacher, training=False, image_size=32)
    data = image_dataset(8).map(lambda row: {"label": row["label"] % 10})
    for top_r in (4, 10):  # with top_r = C the old error spoke of -inf logits
        cached = cache_teacher_logits(small_teacher, data, transform, top_r=top_r)
        args = make_args(tmp_path, sampler="full", output_dir=str(tmp_path / f"r{top_r}"))
        with pytest.raises(ValueError, match=r"teacher of 10 classes .* the student predicts 20"):
            DistillationTrainer(
                model=timm_model(), args=args, train_dataset=cached.with_transform(labelled_batches(transform))
            )
        assert not (tmp_path / f"r{top_r}").exists()


def test_a_cache_naming_other_classes_is_refused(tmp_path):
    names = [f"class {i}" for i in range(NUM_CLASSES)]
    model = timm_model("test_resnet", seed=1).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": names[::-1]}  # same classes, reversed order
    transform = image_transform(model, training=False, image_size=32)
    data = image_dataset(8)
    cached = cache_teacher_logits(model, data, transform, top_r=4)
    assert hf_dis.data.teacher_cache_info(cached)["class_names"] == names[::-1]
    data_named = cached.cast_column("label", datasets.ClassLabel(names=names))
    args = make_args(tmp_path, sampler="full")
    with pytest.raises(ValueError, match="teacher cache and the training data have the same classes in a different"):
        DistillationTrainer(
            model=timm_model(), args=args, train_dataset=data_named.with_transform(labelled_batches(transform))
        )


def test_an_old_cache_without_its_record_loads_with_a_warning(tmp_path, caplog):
    model = teacher().eval()
    transform = image_transform(model, training=False, image_size=32)
    cached = cache_teacher_logits(model, image_dataset(8), transform, top_r=4)
    record = hf_dis.data.teacher_cache_info(cached)
    for key in ("num_classes", "class_names", "transform"):
        del record[key]
    cached.info.description = json.dumps({"hf_dis_teacher_cache": record})
    args = make_args(tmp_path, sampler="full", max_steps=1)
    with caplog.at_level("WARNING"):
        DistillationTrainer(
            model=timm_model(), args=args, train_dataset=cached.with_transform(labelled_batches(transform))
        ).train()
    assert "cannot be checked against the student's 20 classes" in caplog.text


# --- labels checked where they come from --------------------------------------------------------------------------


def renamed_labels(column: str, values: list, feature=None) -> datasets.Dataset:
    """A table whose label column is `column`, renamed to `labels` by the transform (CIFAR-100's fine_label)."""
    rng = np.random.default_rng(0)
    table = datasets.Dataset.from_dict(
        {"image": [rng.standard_normal((3, 32, 32)).astype(np.float32) for _ in values], column: values}
    )
    if feature is not None:
        table = table.cast_column(column, feature)
    return table.with_transform(
        lambda batch: {"pixel_values": torch.tensor(np.asarray(batch["image"])), "labels": batch[column]}
    )


OUT_OF_RANGE = "'fine_label' column has label 25"


@pytest.mark.parametrize(
    ("table", "options", "message"),
    [
        (lambda: renamed_labels("fine_label", [1] * 7 + [25]), {"label_column": "fine_label"}, OUT_OF_RANGE),
        (lambda: renamed_labels("fine_label", [1] * 7 + [25], datasets.ClassLabel(num_classes=30)), {}, OUT_OF_RANGE),
        (lambda: renamed_labels("label", [1.0] * 8), {}, "holds double values; labels must be integer"),
        (lambda: renamed_labels("label", []), {}, "the training dataset is empty"),
        (lambda: renamed_labels("fine_label", [1] * 8), {"label_column": "coarse"}, "label_column='coarse' is not a"),
    ],
)  # fmt: skip
def test_bad_labels_are_found_before_the_first_step(tmp_path, table, options, message):
    args = make_args(tmp_path, sampler="full", save_strategy="steps", save_steps=1, **options)
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=table())
    with pytest.raises(ValueError, match=message):
        trainer.train()
    assert folder_listing(Path(args.output_dir)) == {}


def test_a_torch_datasets_targets_are_checked_whole(tmp_path):
    dataset = RandomImages(8)
    dataset.labels[-1] = 25
    dataset.targets = dataset.labels  # the torchvision convention
    args = make_args(tmp_path, sampler="full", save_strategy="steps", save_steps=1)
    with pytest.raises(ValueError, match="targets has label 25"):
        DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=dataset).train()
    assert folder_listing(Path(args.output_dir)) == {}


def test_float_labels_in_batches_are_refused(tmp_path):
    class FloatLabels(RandomImages):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return {**item, "labels": item["labels"].float()}

    args = make_args(tmp_path, sampler="full")
    with pytest.raises(ValueError, match="must be integer class ids"):
        DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=FloatLabels()).train()


# --- a reused output folder ---------------------------------------------------------------------------------------


def test_a_second_run_into_the_same_folder_is_refused_unless_asked(tmp_path):
    def trainer(**options):
        args = make_args(tmp_path, sampler="full", save_strategy="steps", save_steps=1, **options)
        return DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=RandomImages())

    trainer(overwrite_output_dir=False).train()
    out = tmp_path / "out"
    before = folder_listing(out)
    assert {"README.md", "checkpoint-2/model.safetensors"} <= set(before)
    with pytest.raises(ValueError, match=r"already holds a run \(checkpoint-1, checkpoint-2, README.md\).*resume_from"
                                         r"_checkpoint=True.*overwrite_output_dir=True"):  # fmt: skip
        trainer(overwrite_output_dir=False).train()
    assert folder_listing(out) == before
    trainer(overwrite_output_dir=False).train(resume_from_checkpoint=True)  # resuming is allowed
    trainer(overwrite_output_dir=True, max_steps=1).train()  # so is replacing: the old checkpoints go
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1"]


# --- damaged checkpoints ------------------------------------------------------------------------------------------


def two_checkpoints(tmp_path) -> Path:
    args = make_args(tmp_path, sampler="full", max_steps=4, save_strategy="steps", save_steps=2)
    DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=RandomImages(24)).train()
    return Path(args.output_dir)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: truncate(c / "trainer_state.json"), r"trainer_state.json has \d+ bytes, \d+ when it was written"),
        (lambda c: truncate(c / "model.safetensors"), r"model.safetensors has \d+ bytes"),
        (lambda c: (c / "optimizer.pt").unlink(), r"optimizer.pt is missing"),
        (lambda c: [p.unlink() for p in c.iterdir()], r"is empty"),
        (lambda c: ((c / MARKER_NAME).unlink(), truncate(c / "trainer_state.json")), r"trainer_state.json is damaged"),
        (lambda c: ((c / MARKER_NAME).unlink(), truncate(c / "model.safetensors")), r"model.safetensors is damaged"),
        (lambda c: ((c / MARKER_NAME).unlink(), (c / "scheduler.pt").unlink()), r"scheduler.pt is missing"),
    ],
)  # fmt: skip
def test_a_damaged_checkpoint_is_named_and_skipped(tmp_path, caplog, damage, message):
    out = two_checkpoints(tmp_path)
    damage(out / "checkpoint-4")
    args = make_args(tmp_path, sampler="full", max_steps=4, save_strategy="steps", save_steps=2)

    def trainer():
        return DistillationTrainer(model=timm_model(), args=args, teacher=teacher(), train_dataset=RandomImages(24))

    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint-4: .*" + message):
        trainer().train(resume_from_checkpoint=str(out / "checkpoint-4"))
    with caplog.at_level("WARNING"):
        trainer().train(resume_from_checkpoint=True)  # falls back to checkpoint-2 and trains to the end
    assert "skipping checkpoint-4 when resuming" in caplog.text and re.search(message, caplog.text)
    assert checkpoint_problem(out / "checkpoint-4") is None  # written again, whole


# --- a run killed during a checkpoint save ------------------------------------------------------------------------


def test_a_run_killed_during_a_save_resumes_from_the_previous_checkpoint(tmp_path):
    """The subprocess kills itself (SIGKILL) inside the save of checkpoint-4, after the weights and before the
    trainer state; resuming with resume_from_checkpoint=True skips that half checkpoint, resumes from checkpoint-2
    and ends with the weights of an uninterrupted run."""
    script = SCRIPTS / "killed_during_save.py"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, str(script), str(straight), "run"], check=True, env=env, timeout=1800)
    killed = tmp_path / "killed"
    result = subprocess.run([sys.executable, str(script), str(killed), "kill-at-4"], env=env, timeout=1800)
    assert result.returncode == -9
    assert (
        checkpoint_problem(killed / "checkpoint-4") is not None and checkpoint_problem(killed / "checkpoint-2") is None
    )
    subprocess.run([sys.executable, str(script), str(killed), "resume"], check=True, env=env, timeout=1800)
    final, expected = load_file(killed / "model.safetensors"), load_file(straight / "model.safetensors")
    assert final.keys() == expected.keys()
    for name in expected:
        assert torch.equal(final[name], expected[name]), name


# --- smaller errors -----------------------------------------------------------------------------------------------


def test_a_truncated_cifar100_pickle_is_named(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar100_release(folder, {"train": 4, "test": 2})
    truncate(folder / "train")
    with pytest.raises(ValueError, match=r"cifar-100-python/train is not a whole CIFAR-100 pickle"):
        load_cifar100(str(folder))


def test_a_cifar100_pickle_with_fewer_labels_than_images_is_named(tmp_path):
    folder = tmp_path / "cifar-100-python"
    images, fine, coarse = write_cifar100_release(folder, {"train": 4, "test": 2})["train"]
    rows = images.transpose(0, 3, 1, 2).reshape(4, -1)
    write_py2_pickle(folder / "train", {b"data": rows, b"fine_labels": fine[:3], b"coarse_labels": coarse})
    with pytest.raises(ValueError, match=r"cifar-100-python/train: 4 images but 3 fine_labels: the file is damaged"):
        load_cifar100(str(folder))


def test_nothing_to_train_is_refused_before_a_card_is_written(tmp_path):
    args = make_args(tmp_path, max_steps=-1, num_train_epochs=0)
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
                                  train_dataset=RandomImages(8))  # fmt: skip
    with pytest.raises(ValueError, match="num_train_epochs=0 and no max_steps: nothing would be trained"):
        trainer.train()
    assert not (tmp_path / "out" / "README.md").exists()


def test_running_statistics_that_diverged_are_not_saved(tmp_path):
    """BatchNorm's running_var holding inf (a diverged forward with finite weights) is refused at save time too."""
    trainer = DistillationTrainer(model=timm_model("test_resnet"), args=make_args(tmp_path, max_steps=1),
                                  teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(8))  # fmt: skip
    buffer = next(name for name, b in trainer.model.named_buffers() if name.endswith("running_var"))
    trainer.model.get_buffer(buffer).fill_(float("inf"))
    with pytest.raises(DivergenceError, match=f"{buffer!r} holds NaN or inf"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved").exists()


def test_a_live_teacher_beside_another_teachers_cache_is_refused(tmp_path):
    """The cache is what a batch distils: with teacher= of another architecture the run would distil one teacher and
    name the other. The teacher that made the cache is accepted beside it."""
    data = image_dataset(8)
    transform = image_transform(timm_model(), training=False, image_size=32)
    maker = timm_model("test_resnet", seed=1)
    cached = cache_teacher_logits(maker, data, transform, top_r=4, batch_size=4)
    train = cached.with_transform(labelled_batches(transform))
    args = make_args(tmp_path, max_steps=1)
    with pytest.raises(ValueError, match=r"carries the cached logits of another teacher .*than teacher= "):
        DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_convnext", seed=2),
                            train_dataset=train)  # fmt: skip
    DistillationTrainer(model=timm_model(), args=args, teacher=maker, train_dataset=train)


def test_train_twice_on_one_trainer_replaces_its_own_run(tmp_path, caplog):
    """A trainer's own earlier run is not "another run": train() again replaces it (its checkpoints removed, said in
    a warning), while another trainer into that folder is still refused."""
    args = make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, overwrite_output_dir=False)
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
                                  train_dataset=RandomImages(8))  # fmt: skip
    trainer.train()
    with caplog.at_level("WARNING", logger="hf_dis.trainer.run_folder"):
        trainer.train()
    assert any("train() again: replacing the run" in record.getMessage() for record in caplog.records)
    assert (tmp_path / "out" / "checkpoint-2").is_dir()  # the second run's
    other = DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
                                train_dataset=RandomImages(8))  # fmt: skip
    with pytest.raises(ValueError, match="already holds a run"):
        other.train()


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    """Another process holds the run lock of output_dir (as a run training there does): a run into that folder is
    refused before anything is written, naming the process; once that process is gone, its lock is taken over."""
    output = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom hf_dis.trainer.run_folder import run_folder_lock\n"
         f"with run_folder_lock({str(output)!r}):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        trainer = DistillationTrainer(model=timm_model(), args=make_args(tmp_path, output_dir=str(output)),
                                      teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages())
        with pytest.raises(ValueError, match=f"output_dir {output} is in use by another run \\(process {holder.pid} "):
            trainer.train()
        assert [path.name for path in output.iterdir()] == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    trainer.train()  # the holder was killed: its lock is stale
    assert trainer.state.global_step == 2 and not (output / LOCK_NAME).exists()


def test_a_non_finite_gradient_with_a_finite_loss_stops_the_run(tmp_path):
    """Gradients made infinite in the backward (the loss stays finite): the run stops before the optimizer steps,
    saying so, and no checkpoint holds the result."""
    student = timm_model()
    next(student.parameters()).register_hook(lambda grad: torch.full_like(grad, float("inf")))
    args = make_args(tmp_path, save_strategy="steps", save_steps=1, max_grad_norm=1.0)
    trainer = DistillationTrainer(model=student, args=args, teacher=timm_model("test_resnet", seed=1),
                                  train_dataset=RandomImages())  # fmt: skip
    with pytest.raises(DivergenceError, match="training diverged at step 1 .*: the gradient norm is inf \\(the loss"):
        trainer.train()
    assert not list(Path(args.output_dir).glob("checkpoint-*"))


def test_a_cached_class_id_out_of_range_beyond_the_first_row_is_named(tmp_path):
    """Row 5 of the cache edited to class 999: refused before any step, naming the row, with nothing written."""
    teacher = timm_model("test_resnet", seed=1).eval()
    transform = image_transform(teacher, training=False, image_size=32)
    cached = cache_teacher_logits(teacher, image_dataset(8), transform, top_r=4)

    def edit(row, index):
        return {TOP_CLASSES: [999, *row[TOP_CLASSES][1:]] if index == 5 else row[TOP_CLASSES]}

    edited = cached.map(edit, with_indices=True)
    args = make_args(tmp_path, sampler="full")
    trainer = DistillationTrainer(model=timm_model(), args=args,
                                  train_dataset=edited.with_transform(labelled_batches(transform)))  # fmt: skip
    with pytest.raises(ValueError, match="cached teacher class ids run from 0 to 999, .* \\(first at row 5\\)"):
        trainer.train()
    assert folder_listing(Path(args.output_dir)) == {}


def test_an_evaluation_label_out_of_range_is_refused_before_training(tmp_path):
    train = image_dataset(8)
    evaluation = image_dataset(6, seed=1).map(lambda row, index: {"label": 57 if index == 3 else row["label"]},
                                              with_indices=True)  # fmt: skip
    transform = image_transform(timm_model(), training=False, image_size=32)
    args = make_args(tmp_path, sampler="full", eval_strategy="steps", eval_steps=1)
    trainer = DistillationTrainer(
        model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
        train_dataset=train.with_transform(labelled_batches(transform)),
        eval_dataset=evaluation.with_transform(labelled_batches(transform)), compute_metrics=classification_metrics,
    )  # fmt: skip
    with pytest.raises(ValueError, match="the evaluation set's 'label' column has label 57, outside \\[0, 20\\)"):
        trainer.train()
    assert folder_listing(Path(args.output_dir)) == {}


def test_model_init_is_refused_with_the_way_to_tune(tmp_path):
    with pytest.raises(ValueError, match="model_init \\(and so hyperparameter_search\\) is not supported: .* one "
                                         "trainer per value"):  # fmt: skip
        DistillationTrainer(args=make_args(tmp_path), model_init=timm_model, teacher=timm_model("test_resnet"),
                            train_dataset=RandomImages())  # fmt: skip


def test_cache_columns_joined_onto_rows_in_another_order_are_refused(tmp_path):
    """The cache's columns put beside the same images in another order: each row would train on another image's
    teacher logits. Refused before any step, naming a row; the cache's own rows train."""
    teacher = timm_model("test_resnet", seed=1).eval()
    transform = image_transform(teacher, training=False, image_size=32)
    data = image_dataset(8)
    cached = cache_teacher_logits(teacher, data, transform, top_r=4)
    reordered = data.select([1, 0, *range(2, 8)])
    for column in (TOP_CLASSES, TOP_LOGITS, TAIL_LOGIT, IMAGE_HASH):
        reordered = reordered.add_column(column, cached[column])
    reordered.info.description = cached.info.description  # the cache's record, as a copy of its columns keeps it
    args = make_args(tmp_path, sampler="full")
    trainer = DistillationTrainer(model=timm_model(), args=args,
                                  train_dataset=reordered.with_transform(labelled_batches(transform)))  # fmt: skip
    with pytest.raises(ValueError, match="row 0's image is not the one its cached teacher logits were made for \\(2 "
                                         "of 8 rows differ\\)"):  # fmt: skip
        trainer.train()
    assert folder_listing(Path(args.output_dir)) == {}
    DistillationTrainer(model=timm_model(), args=args,
                        train_dataset=cached.with_transform(labelled_batches(transform))).train()  # fmt: skip


def test_a_classifier_too_large_for_the_memory_left_is_refused_with_an_estimate(tmp_path, monkeypatch):
    """With 1 MiB free (patched), a 50,000-class full-KD head is refused before anything is written, with the
    estimate by part and the options that shrink it; the same head with DIS and row-sparse updates needs less."""
    import hf_dis.trainer.trainer as trainer_module
    from hf_dis.trainer.classifier_memory import classifier_training_bytes

    monkeypatch.setattr(trainer_module, "free_memory_bytes", lambda device: 2**20)
    num_classes = 50_000
    args = make_args(tmp_path, sampler="full")
    trainer = DistillationTrainer(model=timm_model(num_classes=num_classes), args=args,
                                  teacher=timm_model("test_resnet", num_classes=num_classes, seed=1),
                                  train_dataset=RandomImages(8, num_classes=num_classes))  # fmt: skip
    with pytest.raises(MemoryError, match="the 50,000-class classifier needs about .* GiB beyond its weights .*"
                                          "classifier_optimizer='row_sparse'"):  # fmt: skip
        trainer.train()
    assert folder_listing(Path(args.output_dir)) == {}
    full = classifier_training_bytes(num_classes, 64, 4, optimizer_states=1, full_steps=True, dense_update=True)
    sampled = classifier_training_bytes(num_classes, 64, 4, optimizer_states=1, full_steps=False, dense_update=False)
    assert sum(sampled.values()) < sum(full.values()) / 2


def test_labels_in_a_column_hf_dis_does_not_recognise_are_named_in_a_warning(tmp_path, caplog):
    data = image_dataset(8).rename_column("label", "digit")
    transform = image_transform(timm_model(), training=False, image_size=32)

    def renamed(batch):
        return {"pixel_values": [transform(image) for image in batch["image"]], "labels": batch["digit"]}

    trainer = DistillationTrainer(model=timm_model(), args=make_args(tmp_path, sampler="full"),
                                  teacher=timm_model("test_resnet", seed=1),
                                  train_dataset=data.with_transform(renamed))  # fmt: skip
    trainer.train()
    assert "has no label column hf_dis recognises (columns: ['image', 'digit']" in caplog.text


class OneGreyImage(RandomImages):
    """RGB images with one grey one (a single channel) at `grey`, as a user's transform without convert('RGB')
    makes them."""

    def __init__(self, grey: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grey = grey

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if index == self.grey:
            item["pixel_values"] = item["pixel_values"][:1]
        return item


def test_a_grey_image_among_rgb_ones_is_named_with_its_shape(tmp_path):
    args = make_args(tmp_path, sampler="full", per_device_train_batch_size=16)
    data = OneGreyImage(grey=5)
    trainer = DistillationTrainer(model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1),
                                  train_dataset=data)  # fmt: skip
    label = int(data.labels[5])
    with pytest.raises(ValueError, match=f"a batch's 'pixel_values' differ in shape: example .* \\(label {label}\\) is "
                                         "\\[1, 32, 32\\] where example 0 .* is \\[3, 32, 32\\]. A grey"):  # fmt: skip
        trainer.train()
