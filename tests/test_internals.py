"""Each dependency of hf_dis on a Trainer or DDP internal (hf_dis/trainer/internals.py), checked against the installed
transformers and torch: an upgrade that changes one fails here, by name."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
from tiny_models import RandomImages
from torch import nn
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback

from hf_dis.trainer.internals import (
    CHECKPOINT_PATTERN,
    across_devices_loss_scale,
    checkpoint_folder,
    count_loss_items,
    exclude_from_ddp,
    trainer_logs_after_step,
)


class LossOfTheBatch(nn.Module):
    """A model whose loss is one parameter times the pixels' mean, plus 1 (labels unused). Its forward takes no
    **kwargs, so that the Trainer does not assume on its own that it accepts the loss keywords."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, pixel_values, labels=None, num_items_in_batch=None):
        return {"loss": self.scale * pixel_values.mean() + 1.0}


class RecordingTrainer(Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, object, float]] = []  # (batch size, num_items_in_batch, batch mean loss)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = model(inputs["pixel_values"])["loss"]
        self.seen.append((inputs["pixel_values"].shape[0], num_items_in_batch, float(loss.detach())))
        if num_items_in_batch is not None:  # this micro-batch's share of the accumulated step's mean
            loss = loss * inputs["pixel_values"].shape[0] / num_items_in_batch
        return (loss, {}) if return_outputs else loss


def arguments(tmp_path, **options) -> TrainingArguments:
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", use_cpu=True,
                    disable_tqdm=True, save_strategy="no", learning_rate=0.0, remove_unused_columns=False)  # fmt: skip
    return TrainingArguments(**{**defaults, **options})


def test_the_trainer_saves_checkpoints_where_checkpoint_folder_says(tmp_path):
    args = arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    trainer = Trainer(model=LossOfTheBatch(), args=args, train_dataset=RandomImages(8))
    trainer.train()
    folders = sorted(path.name for path in tmp_path.iterdir() if CHECKPOINT_PATTERN.match(path.name))
    assert folders == ["checkpoint-1", "checkpoint-2"]
    assert checkpoint_folder(tmp_path, 2).is_dir() and (checkpoint_folder(tmp_path, 2) / "trainer_state.json").is_file()


def test_count_loss_items_makes_the_trainer_pass_the_accumulated_examples(tmp_path):
    """With it, compute_loss gets the accumulated step's examples (4 + 2 here) on every micro-batch, and the
    Trainer does not divide the loss by the accumulation steps: the logged loss is the mean over the examples."""
    args = arguments(tmp_path, max_steps=1, gradient_accumulation_steps=2, logging_steps=1)
    trainer = RecordingTrainer(model=LossOfTheBatch(), args=args, train_dataset=RandomImages(6))
    count_loss_items(trainer)
    trainer.train()
    assert [(size, int(items)) for size, items, _ in trainer.seen] == [(4, 6), (2, 6)]
    without = RecordingTrainer(model=LossOfTheBatch(), args=args, train_dataset=RandomImages(6))
    assert not without.model_accepts_loss_kwargs
    without.train()
    assert [items for _, items, _ in without.seen] == [None, None]
    (_, _, first), (_, _, second) = trainer.seen  # learning rate 0: the same losses in both runs
    counted = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    divided = next(entry["loss"] for entry in without.state.log_history if "loss" in entry)
    assert counted == pytest.approx((4 * first + 2 * second) / 6, abs=1e-5)  # the mean over the 6 examples
    assert divided == pytest.approx((first + second) / 2, abs=1e-5)  # the Trainer's division by the 2 steps


@pytest.mark.parametrize("num_processes", [1, 2, 4])
def test_across_devices_loss_scale_is_the_trainers_own(tmp_path, num_processes, monkeypatch):
    """The factor the Trainer's own compute_loss applies to a num_items_in_batch-normalised loss under
    average_tokens_across_devices, for a stand-in accelerator with that many processes."""
    trainer = Trainer(model=LossOfTheBatch(), args=arguments(tmp_path, average_tokens_across_devices=True))
    count_loss_items(trainer)
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: num_processes))
    pixels = torch.ones(2, 3, 4, 4)
    plain = LossOfTheBatch()(pixels)["loss"]
    by_the_trainer = Trainer.compute_loss(trainer, trainer.model, {"pixel_values": pixels}, num_items_in_batch=2)
    assert float((by_the_trainer / plain).detach()) == pytest.approx(num_processes)
    assert across_devices_loss_scale(trainer) == num_processes
    monkeypatch.setattr(trainer.args, "average_tokens_across_devices", False)
    assert across_devices_loss_scale(trainer) == 1


@pytest.mark.parametrize(
    "options",
    [dict(logging_strategy="steps", logging_steps=3), dict(logging_strategy="steps", logging_steps=1),
     dict(logging_strategy="steps", logging_steps=4, logging_first_step=True), dict(logging_strategy="no")],
)  # fmt: skip
def test_trainer_logs_after_step_is_the_default_flow_callbacks_decision(tmp_path, options):
    args = arguments(tmp_path, **options)
    state = TrainerState(max_steps=10, logging_steps=args.logging_steps)
    for step in range(10):
        state.global_step = step
        after = dataclasses.replace(state, global_step=step + 1)
        should_log = DefaultFlowCallback().on_step_end(args, after, TrainerControl()).should_log
        last = step + 1 == 10 and args.logging_strategy != "no"
        assert trainer_logs_after_step(args, state) == (should_log or last), step
    assert state.global_step == 9  # asked on a copy: the state itself is not moved


def test_exclude_from_ddp_keeps_the_parameter_out_of_ddp(tmp_path):
    """On a one-process gloo group: DDP neither registers the excluded parameter for reduction nor complains that
    it got no gradient, and the other parameters stay in."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    exclude_from_ddp(model, model[1].weight)
    assert model._ddp_params_and_buffers_to_ignore == ["1.weight"]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        assert wrapped.parameters_to_ignore == {"1.weight"}
        reduced = {id(parameter) for parameter in wrapped._module_parameters}  # what DDP's reducer averages
        assert id(model[1].weight) not in reduced and len(reduced) == 3
    finally:
        dist.destroy_process_group()


class NormRecordingTrainer(Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, object]] = []

    def _clip_grad_norm(self, model):
        self.calls.append(("clip", None))
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        self.calls.append(("get", grad_norm))
        return super()._get_grad_norm(model, grad_norm)


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_the_trainer_takes_the_gradient_norm_from_its_two_hooks(tmp_path, max_grad_norm):
    """`_clip_grad_norm(model)` clips and returns the norm when max_grad_norm > 0; `_get_grad_norm(model, norm)`
    then gets it, or measures it (norm None) when nothing is clipped: the two hooks a sharded classifier overrides
    so that the norm is over every process's rows."""
    args = arguments(tmp_path, max_steps=1, max_grad_norm=max_grad_norm, learning_rate=0.1)
    trainer = NormRecordingTrainer(model=LossOfTheBatch(), args=args, train_dataset=RandomImages(4))
    trainer.train()
    if max_grad_norm > 0:
        assert [name for name, _ in trainer.calls] == ["clip", "get"] and trainer.calls[1][1] is not None
    else:
        assert trainer.calls == [("get", None)]
