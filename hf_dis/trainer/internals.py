"""What hf_dis relies on in transformers' `Trainer` and torch's DDP beyond their documented extension points.

Gathered here so that an upgrade that changes one of them fails by name in tests/test_internals.py (which checks
each against the installed versions) instead of silently in training:

- `checkpoint_folder`: the name the Trainer gives its checkpoints (`checkpoint-N`, transformers'
  `PREFIX_CHECKPOINT_DIR`), where the callbacks add their files and where resume looks.
- `count_loss_items`: `model_accepts_loss_kwargs`, which makes the Trainer count the accumulated step's examples
  (`num_items_in_batch`) for `compute_loss` and not divide its loss by the accumulation steps again.
- `across_devices_loss_scale`: the factor the Trainer's own `compute_loss` applies under
  `average_tokens_across_devices` (its `num_items_in_batch` counts every process's examples; DDP then averages).
- `trainer_logs_after_step`: whether the Trainer will log after the step under way, asked of its own
  `DefaultFlowCallback`, not copied from it.
- `exclude_from_ddp`: DDP's ignore list, set through its private `_set_params_and_buffers_to_ignore_for_model`.
- The Trainer's gradient-norm hooks `_clip_grad_norm(model)` (max_grad_norm > 0) and `_get_grad_norm(model,
  grad_norm)` (measures it when nothing was clipped): `DistillationTrainer` overrides both for a sharded
  classifier, whose norm is over every process's rows; `GuardedTraining` stops a run whose norm is not finite.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy

#: A checkpoint folder's name; group 1 is its global step.
CHECKPOINT_PATTERN = re.compile(rf"^{re.escape(PREFIX_CHECKPOINT_DIR)}-(\d+)$")


def checkpoint_folder(output_dir: str | os.PathLike, global_step: int) -> Path:
    """The folder the Trainer saves the checkpoint of `global_step` into."""
    return Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{global_step}"


def count_loss_items(trainer: Trainer) -> None:
    """Make `trainer` pass `num_items_in_batch` (the accumulated step's examples, over all processes) to
    `compute_loss`, which then normalises by it; the Trainer no longer divides the loss by the accumulation steps."""
    trainer.model_accepts_loss_kwargs = True


def across_devices_loss_scale(trainer: Trainer) -> int:
    """The factor the Trainer's `compute_loss` multiplies a `num_items_in_batch`-normalised loss by under
    `average_tokens_across_devices` with several processes: DDP averages the gradients over processes, and each
    process's share was divided by every process's examples. (The Trainer's other case, one process driving several
    GPUs with DataParallel, scales per-GPU losses; hf_dis computes its loss on the gathered batch, which needs none.)"""
    if not trainer.args.average_tokens_across_devices:
        return 1
    return trainer.accelerator.num_processes // trainer.get_tp_size()


def trainer_logs_after_step(args: TrainingArguments, state: TrainerState) -> bool:
    """Whether the Trainer logs after the optimizer step under way (step `state.global_step + 1`), or ends training
    there (the end-of-training log); always True with the epoch strategy (the epoch's last step is not known)."""
    if args.logging_strategy == IntervalStrategy.EPOCH:
        return True
    after = copy.copy(state)
    after.global_step = state.global_step + 1
    control = DefaultFlowCallback().on_step_end(args, after, TrainerControl())
    ends = args.logging_strategy != IntervalStrategy.NO and after.global_step >= state.max_steps
    return bool(control.should_log) or ends


def exclude_from_ddp(model: nn.Module, parameter: torch.Tensor) -> None:
    """Put `parameter` on the ignore list DDP reads when it wraps `model` (DDP then neither broadcasts it nor reduces
    its gradient; the caller does)."""
    names = [name for name, p in model.named_parameters() if p is parameter]
    ignored = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(ignored | set(names)))
