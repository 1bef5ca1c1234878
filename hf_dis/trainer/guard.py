"""`GuardedTraining`: a Trainer mixin for what a run must never do silently.

- Train on after its loss or its gradients diverged: the gradient norm is checked before each optimizer step (outside
  fp16, whose loss scaler skips such steps), and every micro-batch's loss (one device read per micro-batch, as the
  Trainer's own NaN filter does). A NaN or inf raises `DivergenceError` before the optimizer steps, naming the step,
  the part that went wrong (a loss part, the teacher's logits, weights made non-finite by the previous update) and
  what to try. The fp16 loss scaler's skipping of overflowing *gradients* is not affected: it happens after the loss.
- Save non-finite weights: `save_model` (checkpoints, the final model) refuses them, naming the parameter.
- Write over another run's folder, or resume from a half-written checkpoint: see `hf_dis.trainer.run_folder`.
- Resume with other settings than the checkpoint recorded: see `hf_dis.trainer.run_settings`.

Every guarded run also records its evaluations against its training time (`hf_dis.trainer.curve`).
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from hf_dis._checks import NonFiniteError
from hf_dis.trainer.curve import EvaluationCurve
from hf_dis.trainer.run_folder import (
    MARKER_NAME,
    CheckpointMarkerCallback,
    checkpoints_in,
    prepare_run_folder,
    run_folder_lock,
)
from hf_dis.trainer.run_settings import check_resumed_settings, model_fingerprint, recorded_settings


class DivergenceError(FloatingPointError):
    """Training produced a NaN or an infinity; nothing from that step on was saved."""


def first_non_finite_parameter(model: nn.Module) -> str | None:
    """The name of the first parameter, or floating-point buffer (a BatchNorm's running statistics), holding a NaN or
    an infinity; None when all are finite."""
    buffers = ((name, buffer) for name, buffer in model.named_buffers() if buffer.is_floating_point())
    for name, tensor in (*model.named_parameters(), *buffers):
        if not bool(torch.isfinite(tensor.detach()).all()):
            return name
    return None


#: Command-line words for `resume_from_checkpoint`: the newest complete checkpoint, or a fresh run.
RESUME_LATEST, RESUME_NONE = ("true", "last", "latest", "yes"), ("false", "no", "none", "")


def resume_argument(value: str | bool | None) -> str | bool | None:
    """`resume_from_checkpoint` as `Trainer.train` takes it: a command line's "true" / "last" -> True (the newest
    complete checkpoint), "false" / "" -> None (a fresh run), a folder as it is."""
    if isinstance(value, str) and value.strip().lower() in RESUME_LATEST:
        return True
    if isinstance(value, str) and value.strip().lower() in RESUME_NONE or value is False:
        return None
    return value


class GuardedTraining:
    """Mixin for `transformers.Trainer` subclasses (before `Trainer` in the bases; after `LossPartsLogging`, whose
    running sums name the loss part that diverged). Its arguments may carry `overwrite_output_dir`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_callback(CheckpointMarkerCallback(self.accelerator.wait_for_everyone, self.run_settings))
        #: Settings changed on resume (resume_with_changed_settings=True), as "name: now X (was Y)".
        self.resumed_changes: list[str] = []

    def run_settings(self) -> dict[str, Any]:
        """What defines this run, recorded in each checkpoint and compared on resume (subclasses add theirs)."""
        return {"student": model_fingerprint(self.model)}

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ):
        """`Trainer.train` after `prepare_run_folder`: a reused `output_dir` refused, `resume_from_checkpoint=True`
        resolved to the newest complete checkpoint, a damaged one named. Unset, `resume_from_checkpoint` is the
        arguments' (`--resume_from_checkpoint` on a command line: a folder, or true / last for the newest complete
        checkpoint), so that every script resumes as its command line asks."""
        if self.args.max_steps <= 0 and self.args.num_train_epochs <= 0:
            raise ValueError(
                f"num_train_epochs={self.args.num_train_epochs} and no max_steps: nothing would be trained (and a "
                "distilled student's card would describe a model never trained). Set num_train_epochs or max_steps."
            )
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        if not any(isinstance(callback, EvaluationCurve) for callback in self.callback_handler.callbacks):
            self.add_callback(EvaluationCurve())  # eval_curve.json: the metric against training time
        lock = run_folder_lock(self.args.output_dir) if self.is_world_process_zero() else nullcontext()
        with lock:  # one run at a time in a folder: taken before the folder is checked or anything written
            checkpoint = self._prepare_folder(resume_from_checkpoint)
            return super().train(checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _prepare_folder(self, resume_from_checkpoint: str | bool | None) -> str | None:
        """`prepare_run_folder`, the resumed checkpoint's settings compared with this run's, and what the Trainer
        does not restore itself; returns the checkpoint to resume from (None: a fresh run)."""
        overwrite = getattr(self.args, "overwrite_output_dir", False)
        folder = os.path.abspath(self.args.output_dir)
        own = getattr(self, "_trained_into", None) == folder  # train() again: this trainer's own earlier run
        checkpoint = prepare_run_folder(
            self.args.output_dir, resume_argument(resume_from_checkpoint), overwrite, self.is_world_process_zero(), own
        )
        if checkpoint is not None and self.is_world_process_zero():  # the settings the main process recorded
            self.resumed_changes = check_resumed_settings(
                checkpoint, recorded_settings(checkpoint, MARKER_NAME), self.run_settings(),
                getattr(self.args, "resume_with_changed_settings", False),
            )  # fmt: skip
        self._trained_into = folder
        self.prepare_resume(checkpoint)
        return checkpoint

    def prepare_resume(self, checkpoint: str | None) -> None:
        """Restore what the Trainer itself does not, before it resumes from `checkpoint` (None: a fresh run)."""

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except NonFiniteError as error:  # a loss's own value check (on the CPU) found it first
            raise DivergenceError(self._divergence_message(model, inputs, str(error))) from error
        if not bool(torch.isfinite(loss)):
            raise DivergenceError(self._divergence_message(model, inputs, f"the loss is {float(loss)}"))
        return loss

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        # A private Trainer hook (internals.py), run before every optimizer step: a finite loss can still give
        # non-finite gradients (an overflow in the backward). fp16's loss scaler skips such steps itself.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        if grad_norm is not None and self.accelerator.scaler is None and not math.isfinite(float(grad_norm)):
            found = f"the gradient norm is {float(grad_norm)} (the loss was finite)"
            raise DivergenceError(self._divergence_message(model, {}, found))
        return grad_norm

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, refusing weights (or running statistics) that hold a NaN or an infinity (nothing is
        written then)."""
        name = first_non_finite_parameter(self.model)
        if name is not None:
            raise DivergenceError(
                f"not saving the model to {output_dir or self.args.output_dir}: its parameter {name!r} holds NaN or "
                f"inf (training diverged by step {self.state.global_step}). {self._what_to_try()}"
            )
        super().save_model(output_dir, _internal_call)

    def divergence_cause(self, model: nn.Module, inputs: dict[str, Any]) -> str | None:
        """Where a non-finite loss came from, beyond the loss parts (a subclass names its teacher); None: unknown."""
        return None

    def _divergence_message(self, model: nn.Module, inputs: dict[str, Any], found: str) -> str:
        step = self.state.global_step + 1
        causes = []
        name = first_non_finite_parameter(model)
        if name is not None:
            causes.append(f"the weights are already non-finite (first: {name!r}): the previous update diverged")
        extra = self.divergence_cause(model, inputs) if inputs else None
        if extra is not None:
            causes.append(extra)
        loss_parts = getattr(self, "loss_parts", None)
        parts = [] if loss_parts is None else loss_parts["train"].non_finite()
        if parts:
            causes.append(f"non-finite loss parts: {', '.join(parts)}")
        cause = "; ".join(causes) if causes else "the student's outputs overflowed"
        checkpoints = checkpoints_in(self.args.output_dir)
        saved = f" The newest checkpoint is {checkpoints[0]}." if checkpoints else ""
        return (
            f"training diverged at step {step} (epoch {self.state.epoch or 0:.2f}): {found} ({cause}). "
            f"Stopped before the optimizer stepped; nothing non-finite was saved.{saved} {self._what_to_try()}"
        )

    def _what_to_try(self) -> str:
        args = self.args
        clip = "" if args.max_grad_norm and math.isfinite(args.max_grad_norm) else " (now off)"
        tips = [f"a lower learning_rate (now {args.learning_rate:g})", f"gradient clipping, max_grad_norm{clip}"]
        if args.fp16:
            tips.append("bf16 instead of fp16 (fp16 overflows above 65504)")
        return "Try " + ", ".join(tips) + "."
