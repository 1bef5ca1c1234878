"""`DistillationTrainer`: a `transformers.Trainer` whose loss distils a frozen teacher into the student, over all
classes or over a sampled set chosen by a `ClassSampler` (DIS by default).

What it adds to the Trainer, and where:
- `__init__`: loads and freezes the teacher (kept outside the student's module tree: never wrapped in DDP, never
  optimised), swaps the student's classifier for a `SampledLinear` sharing its parameters, builds the sampler;
  checks that the teacher, the student and the training data name the same classes in the same order (where they
  name them) and gives the student those names.
- `compute_loss`: teacher logits once (or from the batch's teacher-cache columns, without running the teacher);
  student logits at the sampled classes only, through the student's own forward (so DDP synchronises gradients
  and Accelerate applies autocast); the loss from `hf_dis.losses`. Every
  `refit_every` optimizer steps (and step 0) an adaptive sampler gets a full-distillation probe step: its gradient
  trains the student as usual, and its statistic, averaged over micro-batches and processes, refits the proposal.
- Gradient accumulation: the loss is a sum over examples divided by the examples of the whole accumulated step
  (`num_items_in_batch`), so one step of batch 2N equals two accumulated steps of batch N, ragged batches included.
- Randomness: each micro-batch draws from a generator seeded by (seed, global step, micro-step, process), so a run
  resumed from a checkpoint draws exactly what the uninterrupted run drew.
- `train`: checks the labels (whole), the data and the teacher on one example before anything is written, then the
  output folder and the checkpoint to resume from (`GuardedTraining`: also the divergence guard and non-finite
  weights never saved), restores the sampler state when resuming, and writes the student's model card at the end
  (`create_model_card`, also used by `push_to_hub`).
  `log` adds the loss parts and the sampled set's statistics (computed on the steps that are logged only).
- `create_optimizer`: with `classifier_optimizer="row_sparse"`, the classifier leaves the Trainer's optimizer for a
  row-sparse one that updates only the rows each step sampled.
- `classifier_parallel`: the classifier sharded over the processes (`hf_dis.heads.sharded`): every process computes
  the loss of the whole global batch from its own classes' logits (`hf_dis.trainer.sharded_classifier`), saves its
  shard's optimizer state, gathers the rows in `save_model`, and predicts top-5 class ids in evaluation.
- Evaluation under DDP: `BufferSyncCallback` gives every process rank 0's BatchNorm statistics first, so that a
  distributed evaluation scores the model that is saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
from collections.abc import Iterator
from functools import partial
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import pyarrow.types
import torch
import torch.nn.functional as F
from accelerate.utils import broadcast_object_list
from torch import nn
from torch.profiler import record_function
from transformers import PreTrainedModel, TimmWrapperForImageClassification, Trainer

from hf_dis import step_parts
from hf_dis._checks import check_labels
from hf_dis.data.cached_logits import CachedTeacherLogits, TeacherLogits, as_dense
from hf_dis.data.collate import ShapeCheckedCollator
from hf_dis.data.teacher_cache import (
    TAIL_LOGIT,
    TEACHER_EMBEDDINGS,
    TOP_CLASSES,
    TOP_LOGITS,
    check_cached_rows,
    teacher_cache_info,
)
from hf_dis.data.transforms import model_normalization, timm_image_processor
from hf_dis.diagnostics import sampled_set_stats
from hf_dis.heads import SampledLinear, install_sampled_head, split_classifier
from hf_dis.heads.sharded import (
    ShardedLinear,
    gather_from_processes,
    shard_classifier,
    sharded_cross_entropy,
    sharded_topk,
)
from hf_dis.hub import head_step_times, render_card, student_card_data
from hf_dis.losses import DistillationLoss, distillation_loss, sampled_distillation_loss
from hf_dis.losses.distillation import sharded_distillation_loss
from hf_dis.metrics import classification_metrics, top_classes_for_metrics
from hf_dis.models import (
    agreed_class_names,
    dataset_class_names,
    model_class_names,
    set_class_names,
    wrap_timm_model,
)
from hf_dis.models.class_names import class_label_names
from hf_dis.models.describe import describe, num_parameters
from hf_dis.sampling import ClassSampler, build_sampler
from hf_dis.trainer.arguments import DistillationArguments
from hf_dis.trainer.auto_sampler import SamplerChoice, time_sampler_choice
from hf_dis.trainer.buffer_sync import BufferSyncCallback
from hf_dis.trainer.classifier_memory import check_classifier_fits, classifier_training_bytes, free_memory_bytes
from hf_dis.trainer.guard import GuardedTraining
from hf_dis.trainer.internals import (
    across_devices_loss_scale,
    count_loss_items,
    exclude_from_ddp,
    trainer_logs_after_step,
)
from hf_dis.trainer.loss_logging import LossPartsLogging
from hf_dis.trainer.row_sparse_updates import (
    ClassifierOptimizerCallback,
    broadcast_from_main_process,
    build_row_sparse_optimizer,
    load_classifier_state,
    reduce_row_gradient,
    remove_parameters,
    row_sparse_counterpart,
)
from hf_dis.trainer.run_folder import CheckpointMarkerCallback
from hf_dis.trainer.run_settings import model_fingerprint
from hf_dis.trainer.sampler_state import SamplerStateCallback, load_sampler_state
from hf_dis.trainer.sharded_classifier import (
    gathered_teacher_logits,
    load_shard_optimizer_state,
    own_teacher_logits,
    shard_optimizer_name,
    sharded_grad_norm,
    sharded_probe_statistic,
)
from hf_dis.trainer.teacher import (
    TeacherInputs,
    expected_image_size,
    freeze,
    load_image_processor,
    load_teacher,
    processor_image_size,
)

logger = logging.getLogger(__name__)

#: Evaluation images the live teacher's top-1 is measured on before training (`_measure_teacher`).
TEACHER_CHECK_EXAMPLES = 512
#: A teacher is "near chance" at up to this many times chance's top-1 (plus its 95% sampling margin).
NEAR_CHANCE = 3
#: Classes a sharded classifier predicts per example in evaluation (its predictions are class ids, not logits).
PREDICTED_CLASSES = 5


class DistillationTrainer(LossPartsLogging, GuardedTraining, Trainer):
    """Distil `teacher` into `model` with the sampled KD objective of `args` (a `DistillationArguments`).

    Args:
        model: the student: a timm classifier, a `TimmWrapperForImageClassification`, or a transformers image
            classifier of a family `split_classifier` supports. Its classifier is replaced in place by a
            `SampledLinear` that shares its parameters (state dict and saved files are unchanged).
        args: `DistillationArguments`.
        teacher: an `nn.Module` (frozen and moved to the training device here), or a local directory / Hub id /
            timm name; defaults to `args.teacher_model`. None with a training set that carries cached teacher logits
            (`hf_dis.data.cache_teacher_logits`): no teacher is loaded or run, and evaluation on data without cached
            logits reports the student's cross-entropy as its loss (the KD term needs the teacher).
        teacher_processing_class: the teacher's image processor, when its input normalisation is not in a timm
            `pretrained_cfg` (the student's comes from `processing_class`).
        sampler: a `ClassSampler` to use instead of the one `args` describes.
        **kwargs: every other `Trainer` keyword (data_collator, train_dataset, eval_dataset, processing_class,
            compute_metrics, callbacks, optimizers, ...).

    Batches must carry `pixel_values` and (unless alpha = 0) `labels`.
    """

    # compute_loss divides by the examples of the whole accumulated step (num_items_in_batch) itself.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | None = None,
        args: DistillationArguments | None = None,
        *,
        teacher: nn.Module | str | None = None,
        teacher_processing_class: Any = None,
        sampler: ClassSampler | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, DistillationArguments):
            raise TypeError(f"args must be a DistillationArguments, got {type(args).__name__}.")
        if model is None or kwargs.get("model_init") is not None:
            raise ValueError(
                "DistillationTrainer needs the student as model=. model_init (and so hyperparameter_search) is not "
                "supported: the trainer fits its sampled head to the student when it is made, which a model rebuilt "
                "per trial would lack. Tune T or alpha with one trainer per value (see docs/checks.md)."
            )
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("DistillationTrainer computes its own loss; compute_loss_func is not supported.")
        teacher = teacher if teacher is not None else args.teacher_model
        if isinstance(teacher, str) and teacher_processing_class is None:
            # A teacher named by folder or Hub id is fed as its own image processor says (an explicit one wins).
            teacher_processing_class = load_image_processor(teacher)
        if teacher is None and not _carries_teacher_cache(kwargs.get("train_dataset")):
            raise ValueError(
                "no teacher: pass teacher= (an nn.Module, a directory or a Hub id), set args.teacher_model, or train "
                "on a dataset with cached teacher logits (hf_dis.data.cache_teacher_logits)."
            )
        teacher = None if teacher is None else _build_teacher(teacher)
        if teacher is not None and _carries_teacher_cache(kwargs.get("train_dataset")):
            _check_cache_is_the_teachers(teacher_cache_info(kwargs["train_dataset"]) or {}, teacher)
        if teacher is model:
            raise ValueError("the teacher and the student are the same module; pass two models.")
        if not isinstance(model, PreTrainedModel) and hasattr(model, "forward_head"):
            # A plain timm student trains in place inside transformers' wrapper, so that its saved folder loads with
            # AutoModelForImageClassification (and pushes to the Hub like any transformers model).
            model = wrap_timm_model(model) or model
        self.student_head: SampledLinear | ShardedLinear = (
            _shard_classifier(model, args) if args.classifier_parallel else install_sampled_head(model)
        )
        num_classes = self.student_head.out_features
        teacher_classes = None if teacher is None else _num_classes(teacher)
        if teacher_classes is not None and teacher_classes != num_classes:
            raise ValueError(
                f"the teacher predicts {teacher_classes} classes and the student {num_classes}: they must predict the "
                "same classes, in the same order. Build the student with the teacher's number of classes."
            )
        cache_names = _cached_class_names(kwargs.get("train_dataset"), num_classes)
        _name_the_classes(model, num_classes, teacher, kwargs.get("train_dataset"), args.label_names[0], cache_names)
        super().__init__(model=model, args=args, **kwargs)
        self.data_collator = ShapeCheckedCollator(self.data_collator)  # a batch that cannot stack names its examples
        if args.classifier_parallel:  # its predictions are ranked class ids already
            self.compute_metrics = self.compute_metrics or classification_metrics
        elif self.compute_metrics is classification_metrics and self.preprocess_logits_for_metrics is None:
            # The library's own metrics need each example's top classes only: never accumulate [N, C] logits.
            self.preprocess_logits_for_metrics = top_classes_for_metrics
        self.teacher: nn.Module | None = None  # None: the cached logits of the training data stand in for it
        self.teacher_inputs: TeacherInputs | None = None
        if teacher is not None:
            if not hasattr(teacher, "hf_device_map"):  # a model loaded with device_map= stays where it was placed
                teacher = teacher.to(self.accelerator.device)
            self.teacher = freeze(teacher)
            teacher_size = (args.teacher_image_size,) * 2 if args.teacher_image_size else None
            self.teacher_inputs = TeacherInputs(
                model_normalization(model, self.processing_class),
                model_normalization(teacher, teacher_processing_class),
                teacher_size or processor_image_size(teacher_processing_class),
            )
        #: sampler="auto": what was chosen and why (logged, and written to the model card); None otherwise.
        self.sampler_choice: str | None = None
        #: The teacher's top-1 measured before training (`_measure_teacher`); None without a live teacher.
        self.teacher_check: str | None = None
        if sampler is None:
            name = self._choose_sampler(num_classes) if args.sampler == "auto" else args.sampler
            sampler = build_sampler(
                name, num_classes, args.num_sampled_for(num_classes, name), **args.sampler_options(name)
            )
        elif sampler.num_classes != num_classes:
            raise ValueError(f"the sampler is for {sampler.num_classes} classes, the student has {num_classes}.")
        if sampler.name != "full" and args.sampler != "auto" and self.is_world_process_zero():
            _warn_if_sampling_reads_every_class(sampler, args.per_device_train_batch_size)
        self.sampler = sampler
        count_loss_items(self)  # our compute_loss normalises by the accumulated step's examples
        self.add_callback(SamplerStateCallback(sampler))
        self.add_callback(BufferSyncCallback())
        self._probe_sum: torch.Tensor | None = None
        self._probe_count = 0
        self._micro_step = (-1, 0)  # (global step, micro-batches seen in it)
        self.input_size: tuple[int, int] | None = None  # (height, width) of the training images, for the model card
        self.classifier_optimizer: torch.optim.Optimizer | None = None  # classifier_optimizer="row_sparse" only
        self._pending_classifier_state: dict[str, Any] | None = None
        if args.classifier_optimizer == "row_sparse":
            self.student_head.sparse_grad = True
            exclude_from_ddp(self.model, self.student_head.weight)
        if args.classifier_parallel:  # each process's own rows: neither broadcast nor averaged by DDP
            for parameter in (self.student_head.weight, self.student_head.bias):
                if parameter is not None:
                    exclude_from_ddp(self.model, parameter)
        # torch.compile'd with compile_loss: the same functions, their operators fused (and recompiled per shape)
        self._distillation_loss = torch.compile(distillation_loss) if args.compile_loss else distillation_loss
        self._sampled_loss = (
            torch.compile(sampled_distillation_loss) if args.compile_loss else sampled_distillation_loss
        )
        self._card_options: dict[str, Any] = {}
        self._head_times: tuple[int, dict[str, float]] | None = None  # (global step, head_step_times) for the card

    def _choose_sampler(self, num_classes: int) -> str:
        """`sampler="auto"`: time the head step with DIS and over all classes on the main process
        (`hf_dis.trainer.auto_sampler`) and take the faster by the rule there; every process takes the main
        process's choice, which is printed (a warning-level line) and written to the model card."""
        args, head = self.args, self.student_head
        if args.classifier_parallel:  # one process holds a share of the head: there is no whole head to time
            self.sampler_choice = (
                "auto chose dis: the classifier is sharded over processes, a head too large for one device, which is "
                "what sampling is for"
            )
            if self.is_world_process_zero():
                logger.warning("sampler: %s", self.sampler_choice)
            return "dis"
        dis = build_sampler("dis", num_classes, args.num_sampled_for(num_classes, "dis"), **args.sampler_options("dis"))
        timed: list[SamplerChoice | None] = [None]
        if self.is_world_process_zero():
            timed[0] = time_sampler_choice(
                num_classes, head.in_features, args.per_device_train_batch_size, dis, temperature=args.temperature,
                device=args.device, optim=args.optim, classifier_optimizer=args.classifier_optimizer,
            )  # fmt: skip
        (chosen,) = broadcast_object_list(timed)  # every process takes the main process's choice
        self.sampler_choice = chosen.describe(num_classes, dis.num_sampled, args.device)
        if self.is_world_process_zero():
            logger.warning("sampler: %s", self.sampler_choice)
        return chosen.choice

    # --- the loss -------------------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args = self.args
        pixel_values, labels = inputs["pixel_values"], inputs.get(args.label_names[0])
        training = model.training
        teacher_logits: TeacherLogits
        if TOP_CLASSES in inputs:  # a cached teacher (hf_dis.data.cache_teacher_logits): no teacher forward
            # Held as the cache columns: a sampled step reads the ranking and the values on S from them, and only
            # the steps over every class form the [B, C] logits.
            columns = (inputs[TOP_CLASSES], inputs[TOP_LOGITS], inputs[TAIL_LOGIT])
            teacher_logits = CachedTeacherLogits(*columns, self.student_head.out_features).to(pixel_values.device)
            teacher_outputs = {"logits": teacher_logits}
            if TEACHER_EMBEDDINGS in inputs:
                teacher_outputs["embeddings"] = inputs[TEACHER_EMBEDDINGS].to(pixel_values.device)
        elif self.teacher is None and not training:
            return self._cross_entropy_only(model, pixel_values, labels, return_outputs)
        else:
            with record_function(step_parts.TEACHER):
                teacher_outputs = self.teacher_outputs(pixel_values)
            teacher_logits = _logits_of(teacher_outputs)
        batch_size = pixel_values.shape[0]
        if args.classifier_parallel:  # every process computes the loss of every process's examples
            teacher_logits = gathered_teacher_logits(teacher_logits)
            labels = None if labels is None else gather_from_processes(labels)
            batch_size *= self.accelerator.num_processes
        if not training or self.sampler.name == "full" or self._is_probe_step():
            with record_function(step_parts.STUDENT):
                outputs = model(pixel_values)
            student_logits = _logits_of(outputs)
            if args.classifier_parallel:
                parts = self._sharded_full_loss(teacher_logits, student_logits, labels, training)
            else:
                with record_function(step_parts.LOSS):
                    teacher_logits = as_dense(teacher_logits)
                    parts = self._distillation_loss(
                        student_logits,
                        teacher_logits,
                        labels,
                        args.temperature,
                        args.alpha,
                        kd_weight=args.kd_weight,
                        label_smoothing=args.label_smoothing_factor,
                        kd_divergence=args.kd_divergence,
                    )
                if training and self.sampler.refit_every is not None:
                    self._record_probe(self.sampler.probe_statistic(teacher_logits, student_logits, args.temperature))
        else:
            generator = self._draw_generator(teacher_logits.device)
            with record_function(step_parts.SAMPLER):
                drawn = self.sampler.sample(teacher_logits, labels, generator=generator)
            with self.student_head.restricted_to(drawn.classes), record_function(step_parts.STUDENT):
                outputs = model(pixel_values)
            student_logits = _logits_of(outputs)  # [B, K']: never [B, C]
            with record_function(step_parts.LOSS):
                parts = self._sampled_loss(
                    student_logits,
                    teacher_logits,
                    drawn,
                    labels,
                    args.temperature,
                    args.alpha,
                    kd_weight=args.kd_weight,
                    estimator=args.kd_estimator,
                    log_q_correction=args.log_q_correction,
                    label_smoothing=args.label_smoothing_factor,
                    kd_divergence=args.kd_divergence,
                )
            # The sampled set's statistics, on the steps the Trainer logs only (a snapshot, as its grad_norm is):
            # on every step they would add some thirty small operators (kernel launches on a GPU).
            if trainer_logs_after_step(args, self.state):
                for key, value in sampled_set_stats(
                    teacher_logits, drawn, args.temperature, log_q_correction=args.log_q_correction
                ).items():
                    self.loss_parts["train"].add(key, value)
        mode = "train" if training else "eval"
        self._record_parts(mode, parts)
        loss = self._with_auxiliary_losses(mode, parts.loss, outputs, labels, teacher_outputs)
        if training:
            loss = self._scale_for_accumulation(loss, batch_size, num_items_in_batch)
        return (loss, {"logits": student_logits}) if return_outputs else loss

    def _sharded_full_loss(
        self,
        teacher_logits: TeacherLogits,
        student_local: torch.Tensor,
        labels: torch.Tensor | None,
        training: bool,
    ) -> DistillationLoss:
        """The loss over all classes of a sharded classifier, from this process's `[N B, C / N]` logits (and DIS's
        probe statistic on a probe step)."""
        args, shard = self.args, self.student_head.shard
        teacher_local = own_teacher_logits(teacher_logits, shard)
        parts = sharded_distillation_loss(
            student_local, teacher_local, labels, shard, args.temperature, args.alpha, kd_weight=args.kd_weight,
            label_smoothing=args.label_smoothing_factor,
        )  # fmt: skip
        if training and self.sampler.refit_every is not None:
            self._record_probe(
                sharded_probe_statistic(
                    self.sampler, teacher_logits, teacher_local, student_local, shard, args.temperature
                )
            )
        return parts

    def _cross_entropy_only(
        self, model: nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor | None, return_outputs: bool
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The evaluation loss without a teacher (training from cached logits, evaluating on data without them):
        the student's cross-entropy, plus the auxiliary losses; the KD term is not computed, nor logged."""
        if labels is None:
            raise ValueError("evaluating without a teacher needs labels (the KD term needs the teacher's logits).")
        outputs = model(pixel_values)
        student_logits = _logits_of(outputs)
        if isinstance(self.student_head, ShardedLinear):  # this process's classes, of every process's examples
            loss = sharded_cross_entropy(student_logits, gather_from_processes(labels), self.student_head.shard,
                                         label_smoothing=self.args.label_smoothing_factor)  # fmt: skip
        else:
            loss = F.cross_entropy(student_logits.float(), labels, label_smoothing=self.args.label_smoothing_factor)
        self.loss_parts["eval"].add("ce_loss", loss)
        loss = self._with_auxiliary_losses("eval", loss, outputs, labels)
        return (loss, {"logits": student_logits}) if return_outputs else loss

    def _with_auxiliary_losses(
        self, mode: str, loss: torch.Tensor, outputs: Any, labels: torch.Tensor | None, teacher_outputs: Any = None
    ) -> torch.Tensor:
        """`loss` plus the weighted `auxiliary_losses`, each logged under its name."""
        for name, (weight, value) in self.auxiliary_losses(outputs, labels, teacher_outputs).items():
            self.loss_parts[mode].add(name, value)
            loss = loss + weight * value
        return loss

    def auxiliary_losses(
        self, outputs: Any, labels: torch.Tensor | None, teacher_outputs: Any = None
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """Terms added to the distillation loss, as `{name: (weight, batch mean)}`; each is logged under its name.
        None here; subclasses add theirs (the re-ID trainer its triplet and embedding terms) from the student's
        `outputs` and the teacher's `teacher_outputs` on the same batch: the live teacher's own outputs, or from a
        cache a dict with `logits` (and `embeddings` when cached); None where there is no teacher (an evaluation
        without one)."""
        return {}

    def teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, C]` teacher logits on the student's batch (see `teacher_outputs`), in the teacher's output dtype
        (bf16 under bf16 mixed precision: the losses and samplers read them in float32 where it matters, and a
        float32 copy would add 4 bytes per class and example to every step)."""
        return _logits_of(self.teacher_outputs(pixel_values))

    def teacher_outputs(self, pixel_values: torch.Tensor) -> Any:
        """The teacher's outputs on the student's batch (converted to the teacher's input), without gradients, under
        the same mixed precision as the student."""
        if self.teacher is None:
            raise ValueError(
                "this trainer has no teacher (it distils from cached logits) and the batch carries none: give every "
                "training batch the cache columns (hf_dis.data.cache_teacher_logits), or pass teacher=."
            )
        with torch.no_grad(), self.accelerator.autocast():
            return self.teacher(self.teacher_inputs(pixel_values))

    def _scale_for_accumulation(
        self, loss: torch.Tensor, batch_size: int, num_items_in_batch: torch.Tensor | int | None
    ) -> torch.Tensor:
        """Turn a batch mean into this micro-batch's share of the accumulated step's mean over examples."""
        if num_items_in_batch is None:  # no labels to count: assume equal micro-batches
            # (set by the training loop; outside it, e.g. a direct call, the configured number)
            return loss / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        if self.args.classifier_parallel:
            # The loss is the mean over every process's examples (`batch_size` of them), and the sharded head's
            # gradient scale already undoes DDP's average: divide by the step's examples over all processes.
            num_processes = self.accelerator.num_processes
            every_process = num_items_in_batch * (1 if self.args.average_tokens_across_devices else num_processes)
            return loss * (batch_size / every_process)
        return loss * (batch_size / num_items_in_batch) * across_devices_loss_scale(self)

    # --- sampling: seeding and DIS probes -------------------------------------------------------------------------

    def _is_probe_step(self) -> bool:
        refit_every = self.sampler.refit_every
        return refit_every is not None and self.state.global_step % refit_every == 0

    def _draw_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded by (seed, global step, micro-step, process): draws are reproducible on resume. With
        a sharded classifier every process draws for the whole batch, as process 0 (the draws of one process with
        the whole batch)."""
        step, seen = self._micro_step
        self._micro_step = (step, seen + 1) if step == self.state.global_step else (self.state.global_step, 1)
        process = 0 if self.args.classifier_parallel else self.args.process_index
        key = f"{self.sampler.seed}:{self._micro_step[0]}:{self._micro_step[1] - 1}:{process}"
        seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        return generator

    def _record_probe(self, statistic: torch.Tensor) -> None:
        """Add this micro-batch's probe statistic; at the step's last micro-batch, average it over micro-batches and
        processes (every process then refits identically) and let the sampler observe it."""
        self._probe_sum = statistic if self._probe_sum is None else self._probe_sum + statistic
        self._probe_count += 1
        if not self.accelerator.sync_gradients:
            return
        mean = (self._probe_sum / self._probe_count).to(self.accelerator.device)
        self.sampler.observe(self.accelerator.reduce(mean, reduction="mean"))
        self._probe_sum, self._probe_count = None, 0
        for name, value in self.sampler.summary().items():  # the refitted proposal, logged once per refit
            self.loss_parts["train"].set(f"{self.sampler.name}/{name}", value)

    # --- logging --------------------------------------------------------------------------------------------------

    def _record_parts(self, mode: str, parts: DistillationLoss) -> None:
        self.loss_parts[mode].add("kd_loss", parts.kd_loss)
        if parts.ce_loss is not None:
            self.loss_parts[mode].add("ce_loss", parts.ce_loss)

    # --- prediction without labels --------------------------------------------------------------------------------

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if isinstance(self.student_head, ShardedLinear):
            return self._sharded_prediction_step(model, inputs, prediction_loss_only)
        if inputs.get(self.args.label_names[0]) is not None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        # No labels: the Trainer would call model(**inputs), which timm models (forward(x)) do not accept.
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            logits = _logits_of(model(inputs["pixel_values"]))
        return None, None if prediction_loss_only else logits.detach(), None

    def _sharded_prediction_step(
        self, model: nn.Module, inputs: dict[str, torch.Tensor | Any], prediction_loss_only: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """A sharded classifier's predictions: this process's examples' `PREDICTED_CLASSES` highest classes `[B, k]`
        (merged from every process's own rows by `sharded_topk`, never `[B, C]` on one process), the loss of the
        whole batch (with labels), and the labels."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get(self.args.label_names[0])
        with torch.no_grad():
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach()
            else:
                loss, outputs = None, {"logits": model(inputs["pixel_values"])}
            head = self.student_head
            k = min(PREDICTED_CLASSES, head.out_features)
            ranked = sharded_topk(_logits_of(outputs), head.shard, k)[1]
            batch_size = inputs["pixel_values"].shape[0]
            own = ranked[head.shard.rank * batch_size : (head.shard.rank + 1) * batch_size]
        return loss, None if prediction_loss_only else own, labels

    # --- training entry point -------------------------------------------------------------------------------------

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ):
        """`Trainer.train`, after checking the data and the teacher on one example and the output folder (see
        `GuardedTraining`), and restoring the sampler state from the checkpoint when resuming."""
        self._check_training_data()
        self._check_classifier_memory()
        self._measure_teacher()
        result = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        self.create_model_card()
        return result

    def _check_classifier_memory(self) -> None:
        """Refuse a classifier whose gradient, optimizer state and `[B, C]` logits cannot fit in the memory free
        (`hf_dis.trainer.classifier_memory`), before anything is written."""
        args, head = self.args, self.student_head
        if args.classifier_parallel:  # each process holds a share; the sharded classifier is the remedy already
            return
        optimizer = self.optimizer
        if optimizer is None:
            states = 2 if "adam" in str(args.optim).lower() else 1
        elif isinstance(optimizer, torch.optim.SGD):
            states = int(any(group.get("momentum", 0) > 0 for group in optimizer.param_groups))
        else:
            states = 2
        parts = classifier_training_bytes(
            head.out_features, head.in_features, args.per_device_train_batch_size, optimizer_states=states,
            full_steps=self.sampler.name == "full" or self.sampler.refit_every is not None,
            dense_update=args.classifier_optimizer != "row_sparse",
        )  # fmt: skip
        check_classifier_fits(parts, free_memory_bytes(self.args.device), head.out_features)

    def _measure_teacher(self) -> None:
        """The live teacher's top-1 on up to `TEACHER_CHECK_EXAMPLES` evaluation images, fed exactly as in training
        (the student's batch converted by `teacher_inputs`): printed, written to the card, and a warning near chance
        (a teacher fed other inputs than it was trained on, or predicting other classes)."""
        if self.teacher is None or self.eval_dataset is None or isinstance(self.eval_dataset, dict):
            return
        num_classes, correct, seen = self.student_head.out_features, 0, 0
        for batch in self.get_eval_dataloader():
            batch = self._prepare_inputs(batch)
            labels = batch.get(self.args.label_names[0])
            if labels is None or labels.dim() != 1 or not bool(((labels >= 0) & (labels < num_classes)).all()):
                return  # not class labels of these classes (re-ID evaluation sets hold identities)
            predicted = _logits_of(self.teacher_outputs(batch["pixel_values"])).argmax(-1)
            height, width = self.teacher_inputs.image_size or batch["pixel_values"].shape[-2:]
            correct, seen = correct + int((predicted == labels).sum()), seen + len(labels)
            if seen >= TEACHER_CHECK_EXAMPLES:
                break
        if not seen:
            return
        accuracy = correct / seen
        self.teacher_check = (
            f"{accuracy:.1%} top-1 on {seen:,} evaluation images, fed as in training ({height}x{width})"
        )
        if not self.is_world_process_zero():
            return
        logger.warning("teacher: %s", self.teacher_check)
        if accuracy <= NEAR_CHANCE * (1 / num_classes + 1.96 * (1 / (num_classes * seen)) ** 0.5):
            logger.warning(
                "the teacher is near chance (%.1f%% against %.2f%% for a random guess among %s classes): it is likely "
                "fed other inputs than it was trained on (its normalisation: pass its image processor as "
                "teacher_processing_class=, or a folder holding its preprocessor_config.json; its input size: "
                "teacher_image_size), or it predicts other classes than the data's. Distilling it teaches the "
                "student little.",
                100 * accuracy, 100 / num_classes, f"{num_classes:,}",
            )  # fmt: skip

    def run_settings(self) -> dict[str, Any]:
        """The student's architecture, the teacher (or the cache's teacher and the cache's fingerprint), the loss and
        the sampler with its options: recorded in each checkpoint, compared on resume."""
        args = self.args
        if self.teacher is not None:
            config = getattr(self.teacher, "config", None)
            teacher = getattr(config, "_name_or_path", None) or args.teacher_model or model_fingerprint(self.teacher)
        else:
            info = teacher_cache_info(self.train_dataset) or {}
            teacher = f"cache of {info.get('teacher')} ({getattr(self.train_dataset, '_fingerprint', None)})"
        return {
            **super().run_settings(), "teacher": teacher, "temperature": args.temperature, "alpha": args.alpha,
            "kd_weight": args.kd_weight, "kd_divergence": args.kd_divergence, "kd_estimator": args.kd_estimator,
            "log_q_correction": args.log_q_correction, "sampler": self.sampler.name,
            "num_sampled": self.sampler.num_sampled, "sampler_options": args.sampler_options(self.sampler.name),
            "classifier_optimizer": args.classifier_optimizer,
        }  # fmt: skip

    def prepare_resume(self, checkpoint: str | None) -> None:
        """The sampler's state (and the row-sparse classifier optimizer's) from `checkpoint`; counters reset."""
        super().prepare_resume(checkpoint)
        if checkpoint is not None:
            load_sampler_state(checkpoint, self.sampler)
            if self.args.classifier_parallel:
                self._pending_classifier_state = load_shard_optimizer_state(checkpoint, self.student_head.shard)
            elif self.args.classifier_optimizer == "row_sparse":
                self._pending_classifier_state = load_classifier_state(checkpoint)
        self._micro_step = (-1, 0)
        self._probe_sum, self._probe_count = None, 0  # nothing half-accumulated from an interrupted call

    def divergence_cause(self, model: nn.Module, inputs: dict[str, Any]) -> str | None:
        """The teacher's logits on the batch that diverged, when they are not finite."""
        inputs = self._prepare_inputs(inputs)
        if TOP_CLASSES in inputs:
            logits, source = [inputs[TOP_LOGITS], inputs[TAIL_LOGIT]], "the cached teacher logits"
        elif self.teacher is not None:
            logits, source = [self.teacher_logits(inputs["pixel_values"])], "the teacher's logits"
        else:
            return None
        if all(bool(torch.isfinite(torch.as_tensor(part)).all()) for part in logits):
            return None
        return f"{source} on this batch hold NaN or inf: the teacher, not the student, is the cause"

    # --- model card -----------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | list[str] | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the distilled student's card (README.md) and its data (distillation_card.json) in `output_dir`:
        teacher and student, every distillation setting, the DIS mixture, hyper-parameters, the last evaluation,
        speed, usage, limitations, citation (see `hf_dis.hub`). Called at the end of `train()` and by
        `push_to_hub()`, in place of the Trainer's generic card; `dataset`, `license`, `language`, `tags` and
        `model_name` given once are kept for later calls. `finetuned_from`, `tasks`, `dataset_tags` and
        `dataset_args` are refused: the card states its teacher, task and dataset itself (pass `dataset=`)."""
        refused = dict(finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset_args=dataset_args)
        if any(value is not None for value in refused.values()):
            names = ", ".join(name for name, value in refused.items() if value is not None)
            raise ValueError(
                f"create_model_card does not take {names}: a distilled student's card states its teacher (as the "
                "base model when it is on the Hub), its task and its dataset itself. Pass dataset= (a name or a Hub "
                "id), license=, language= or tags=."
            )
        if isinstance(dataset, list) and len(dataset) > 1:
            raise ValueError(f"the card names one dataset, got {dataset}: pass the one the student was trained on.")
        if not self.is_world_process_zero():
            return
        given = {
            "license": license,
            "model_name": model_name,
            "dataset": _first(dataset),
            "language": language,
            "tags": [tags] if isinstance(tags, str) else tags,
        }
        self._card_options.update({key: value for key, value in given.items() if value is not None})
        if self._head_times is None or self._head_times[0] != self.state.global_step:  # timed once per state
            self._head_times = (self.state.global_step, head_step_times(self))
        data = student_card_data(self, head_times=self._head_times[1], **self._card_options)
        os.makedirs(self.args.output_dir, exist_ok=True)
        data.save(self.args.output_dir)
        render_card(data, repo_id=self.hub_model_id or self.args.hub_model_id).save(
            os.path.join(self.args.output_dir, "README.md")
        )

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer (built here, or passed as `optimizers=`); with `classifier_optimizer="row_sparse"`,
        without the student's classifier, which a row-sparse optimizer with the same hyper-parameters updates right
        after each of its steps (see `hf_dis.trainer.row_sparse_updates`; a passed optimizer must be SGD)."""
        passed = self.optimizer is not None  # optimizers= of the Trainer (the recipes pass theirs)
        optimizer = super().create_optimizer(model)
        if self.args.classifier_optimizer != "row_sparse" or self.classifier_optimizer is not None:
            return optimizer
        head = self.student_head
        if passed:
            self.classifier_optimizer = row_sparse_counterpart(optimizer, head)
        else:
            self.classifier_optimizer = build_row_sparse_optimizer(head, self.args)
        remove_parameters(optimizer, [p for p in (head.weight, head.bias) if p is not None])
        if self._pending_classifier_state is not None:
            self.classifier_optimizer.load_state_dict(self._pending_classifier_state)
            self._pending_classifier_state = None
        optimizer.register_step_post_hook(self._step_classifier)
        if isinstance(head, ShardedLinear):  # each process's own rows, and their state: nothing to share
            self.add_callback(ClassifierOptimizerCallback(self.classifier_optimizer, shard_optimizer_name(head.shard)))
        else:
            broadcast_from_main_process(head.weight)
            head.weight.register_post_accumulate_grad_hook(partial(reduce_row_gradient, accelerator=self.accelerator))
            self.add_callback(ClassifierOptimizerCallback(self.classifier_optimizer))
        # a checkpoint is marked complete only after the classifier optimizer's state is in it (on every process)
        self.add_callback(self.pop_callback(CheckpointMarkerCallback))
        return optimizer

    def _step_classifier(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """After the Trainer's optimizer stepped: the classifier rows this step used (those of the weight's sparse
        gradient; every row after a full forward), at its learning rate."""
        for group in self.classifier_optimizer.param_groups:
            group["lr"] = optimizer.param_groups[0]["lr"]  # the scheduler drives the Trainer's groups
        self.classifier_optimizer.step()

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        for callback in self.callback_handler.callbacks:  # rebuilt from a checkpoint without our sampler: bind it
            if isinstance(callback, SamplerStateCallback) and callback.sampler is None:
                callback.sampler = self.sampler
        return super().training_step(model, inputs, num_items_in_batch)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`; a sharded classifier's rows are gathered on the main process first, so that the
        folder holds one ordinary model (call it on every process, as the Trainer does for checkpoints)."""
        if not isinstance(self.student_head, ShardedLinear):
            return super().save_model(output_dir, _internal_call)
        with self.student_head.gathered():
            super().save_model(output_dir, _internal_call)

    def _clip_grad_norm(self, model: nn.Module) -> torch.Tensor:
        # A private Trainer hook (internals.py): a sharded classifier's norm is the sum over every process's rows.
        if not isinstance(self.student_head, ShardedLinear):
            return super()._clip_grad_norm(model)
        return sharded_grad_norm(model, self.student_head, self.args.max_grad_norm)

    def _get_grad_norm(self, model: nn.Module, grad_norm: torch.Tensor | None = None) -> Any:
        # The norm the Trainer logs without clipping (max_grad_norm = 0), over the shards as `_clip_grad_norm`.
        if grad_norm is None and isinstance(self.student_head, ShardedLinear):
            grad_norm = sharded_grad_norm(model, self.student_head, float("inf"))
        return super()._get_grad_norm(model, grad_norm)

    def _check_training_data(self) -> dict[str, Any] | None:
        """Clear errors before anything is written: the labels (`_check_whole_labels`), then one collated example:
        its keys, and a teacher forward on it (input size, number of classes). Returns that example's batch (None for
        an iterable dataset, or none)."""
        dataset, args = self.train_dataset, self.args
        if dataset is None:
            return None  # Trainer.train says so
        num_classes = self.student_head.out_features
        _check_whole_labels(dataset, args.label_column, args.label_names[0], num_classes)
        _check_cached_class_ids(dataset, num_classes)
        if isinstance(dataset, datasets.Dataset):
            check_cached_rows(dataset)  # each row's image is the one its cached logits were made for
        if self.compute_metrics is classification_metrics:  # class labels: checked now, not at the first evaluation
            evaluation = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"": self.eval_dataset}
            for name, eval_dataset in evaluation.items():
                if isinstance(eval_dataset, datasets.Dataset) and len(eval_dataset):
                    where = f"the evaluation set{f' {name!r}' if name else ''}"
                    _check_whole_labels(eval_dataset, args.label_column, args.label_names[0], num_classes, where)
        if isinstance(dataset, (torch.utils.data.IterableDataset, datasets.IterableDataset)):
            return None
        with _preserved_rng():  # a random augmentation on this example must not shift the run's random streams
            batch = self.data_collator([dataset[0]])
        if "pixel_values" not in batch:
            raise ValueError(
                f"the training batches have no 'pixel_values' (keys: {sorted(batch)}); make the dataset's transform or "
                "the data collator emit pixel_values (and keep remove_unused_columns=False)."
            )
        labels = batch.get(args.label_names[0])
        if labels is None and args.alpha > 0:
            raise ValueError(
                f"the training batches have no {args.label_names[0]!r} (keys: {sorted(batch)}), but alpha={args.alpha} "
                "needs labels. Emit labels from the transform or collator, or set alpha=0 to distil without labels."
            )
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1)
            if labels.is_floating_point():
                raise ValueError(
                    f"the training batches' {args.label_names[0]!r} are {labels.dtype} ({labels[0].item()}); labels "
                    "must be integer class ids: make the transform or the dataset return ints."
                )
            check_labels(labels, 1, num_classes)
        pixel_values = batch["pixel_values"].to(self.accelerator.device)
        self.input_size = tuple(pixel_values.shape[-2:])
        model = self.accelerator.unwrap_model(self.model)
        square = self.input_size[0] == self.input_size[1]
        if self.processing_class is None and isinstance(model, TimmWrapperForImageClassification) and square:
            # Saved with the student, so that pipeline("image-classification") loads it: the student's data config
            # at the training resolution (resize, normalise). An explicit processing_class= is saved instead.
            self.processing_class = timm_image_processor(model, image_size=self.input_size[0])
        if TOP_CLASSES in batch:
            cached = torch.as_tensor(batch[TOP_CLASSES])
            if cached.dim() != 2 or cached.min() < 0 or cached.max() >= num_classes:
                raise ValueError(
                    f"the cached teacher logits do not fit the student's {num_classes} classes (class ids "
                    f"{cached.min().item()}..{cached.max().item()}, shape {tuple(cached.shape)} per batch)."
                )
            _check_cached_ranks(cached.shape[1], self.sampler, args.per_device_train_batch_size)
        if self.teacher is None:
            if TOP_CLASSES not in batch:
                raise ValueError(
                    f"no teacher, and the training batches carry no cached teacher logits (keys: {sorted(batch)}): "
                    "read the cached dataset through hf_dis.data.labelled_batches, or pass teacher=."
                )
            return batch
        try:
            teacher_logits = self.teacher_logits(pixel_values)
        except Exception as error:  # any failure here is a mismatch between the batch and the teacher
            size = expected_image_size(self.teacher)
            hint = f" The teacher expects {size[0]}x{size[1]} images: set teacher_image_size={size[0]}." if size else ""
            raise ValueError(
                f"the teacher cannot run on the student's batch (pixel_values {tuple(pixel_values.shape)}): "
                f"{type(error).__name__}: {error}.{hint}"
            ) from error
        if teacher_logits.dim() != 2 or teacher_logits.shape[1] != num_classes:
            raise ValueError(
                f"the teacher returns logits of shape {tuple(teacher_logits.shape)}; the student predicts "
                f"{num_classes} classes. They must predict the same classes, in the same order."
            )
        return batch


def _check_cached_ranks(cached_ranks: int, sampler: ClassSampler, batch_size: int) -> None:
    """Warn when a teacher cache holds fewer ranks than the sampler reads: the missing ones are then selected from
    the rebuilt logits every step, among classes that all share the cache's tail logit (an arbitrary order); the
    warning says what that costs a step at this C."""
    needed = sampler.ranks_read()
    if cached_ranks < needed:
        dense_mb = batch_size * sampler.num_classes * 4 / 2**20
        logger.warning(
            "the teacher cache holds the top %d classes per example, but the %s sampler draws from the top %d ranks: "
            "each step then rebuilds the [B, C] teacher logits (%s x %s float32: %.0f MB at this batch) and ranks "
            "all of them (a top-k over C), and ranks %d..%d fall among classes that share the cache's tail logit, so "
            "their order is arbitrary. Cache with top_r >= %d (hf-dis cache-teacher --top_r %d).",
            cached_ranks, sampler.name, needed, f"{batch_size:,}", f"{sampler.num_classes:,}", dense_mb,
            cached_ranks, needed - 1, needed, needed,
        )  # fmt: skip


def _warn_if_sampling_reads_every_class(sampler: ClassSampler, batch_size: int) -> None:
    """An explicit sampler runs as asked; where a step's draws (B x K per example, K for the batch scope) reach C,
    one line says that it cannot save time there."""
    draws = sampler.num_sampled * (1 if sampler.scope == "batch" else batch_size)
    if draws >= sampler.num_classes:
        logger.warning(
            "sampler=%r draws %s classes a step (K = %s%s) for %s classes: a sampled step then reads as many "
            "classifier rows as a full one, so sampling cannot save time here; sampler='auto' (the default) or "
            "'full' would",
            sampler.name, f"{draws:,}", f"{sampler.num_sampled:,}",
            "" if sampler.scope == "batch" else f" per example x batch {batch_size}", f"{sampler.num_classes:,}",
        )  # fmt: skip


def _check_cache_is_the_teachers(info: dict[str, Any], teacher: nn.Module) -> None:
    """A live teacher beside a training set that carries a teacher cache: the cache is what a training batch
    distils, so it must be this teacher's (same architecture and number of parameters), else the run would distil one
    teacher and name another."""
    live = (describe(teacher), num_parameters(teacher))
    cached = (info.get("architecture"), info.get("parameters"))
    if cached != live:
        raise ValueError(
            f"the training set carries the cached logits of another teacher ({info.get('teacher')}: {cached[0]}, "
            f"{cached[1] or 0:,} parameters) than teacher= ({live[0]}, {live[1]:,} parameters): training batches "
            "distil the cache, so the run would distil one teacher and name the other. Pass one: drop teacher= "
            "(or --teacher_model) to distil from the cache, or remove the cache columns to distil the live teacher."
        )


def _carries_teacher_cache(dataset: Any) -> bool:
    """A `datasets` table with the teacher-cache columns (other datasets cannot be checked before training)."""
    return isinstance(dataset, datasets.Dataset) and TOP_CLASSES in dataset.column_names


def _build_teacher(teacher: nn.Module | str) -> nn.Module:
    if isinstance(teacher, str):
        teacher = load_teacher(teacher)
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module or a name/path, got {type(teacher).__name__}.")
    return teacher


def _cached_class_names(dataset: Any, num_classes: int) -> list[str] | None:
    """The class names a teacher cache in `dataset` recorded, after checking its number of classes against the
    student's; None when it recorded none (a cache made before the record had them is only warned about)."""
    if not _carries_teacher_cache(dataset):
        return None
    info = teacher_cache_info(dataset) or {}
    if "num_classes" not in info:
        logger.warning(
            "the training set's teacher cache does not record its teacher's number of classes (made by an older "
            "hf_dis, or not by cache_teacher_logits): it cannot be checked against the student's %d classes. Cache "
            "again to have it checked.",
            num_classes,
        )
        return None
    if info["num_classes"] != num_classes:
        raise ValueError(
            f"the training set's teacher cache was made by a teacher of {info['num_classes']} classes "
            f"({info.get('teacher')}); the student predicts {num_classes}. Cache the logits of a teacher of the "
            "student's classes."
        )
    return info.get("class_names")


def _name_the_classes(
    student: nn.Module,
    num_classes: int,
    teacher: nn.Module | None,
    dataset: Any,
    label_name: str,
    cache_names: list[str] | None,
) -> None:
    """Check that the teacher, its cache, the student and the training data name the same classes in the same
    order, where they name them, and give the student those names when it has none (saved with it: what the Hub
    shows)."""
    names = agreed_class_names(
        {
            "teacher": None if teacher is None else model_class_names(teacher, num_classes),
            "teacher cache": cache_names,
            "student": model_class_names(student, num_classes),
            "training data": dataset_class_names(dataset, (label_name, "label")),
        }
    )
    if names is None:  # none informative; the data's own names, like "0" to "9", still name the saved student
        names = class_label_names(dataset, (label_name, "label"))
        if names is None or len(names) != num_classes:
            return
    if len(names) != num_classes:
        raise ValueError(f"the training data names {len(names)} classes; the student predicts {num_classes}.")
    set_class_names(student, names)


def _shard_classifier(model: nn.Module, args: DistillationArguments) -> ShardedLinear:
    """`classifier_parallel`: this process's `ShardedLinear` of the student's classifier, in place."""
    if args.world_size < 2 or not torch.distributed.is_initialized():
        raise ValueError(
            f"classifier_parallel=True splits the student's classifier over the run's processes, but this run has "
            f"{args.world_size}: launch it with accelerate launch --num_processes N (N >= 2), or leave "
            "classifier_parallel off."
        )
    return shard_classifier(model)


def _num_classes(model: nn.Module) -> int | None:
    """C from the model's linear classifier, or None for a teacher split_classifier does not know (checked on data)."""
    try:
        return split_classifier(model).num_classes
    except ValueError:
        return None


def _logits_of(outputs: Any) -> torch.Tensor:
    """The logits from a timm model's tensor, a transformers ModelOutput, or a tuple."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return outputs["logits"]
    return outputs[0]


def _first(value: str | list[str] | None) -> str | None:
    return value[0] if isinstance(value, list) and value else value or None


def _label_column(dataset: datasets.Dataset, named: str | None, label_name: str) -> str | None:
    """The column the training labels come from: `named` (the `label_column` argument), else the dataset's one
    `ClassLabel` column, else `label_name` or `label` where present (a transform usually renames it)."""
    if named is not None:
        if named not in dataset.column_names:
            raise ValueError(
                f"label_column={named!r} is not a column of the training dataset ({dataset.column_names})."
            )
        return named
    class_labels = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    return next((name for name in (label_name, "label") if name in dataset.column_names), None)


def _check_label_values(values: Any, where: str, num_classes: int) -> None:
    """Integer class ids in [0, num_classes): an arrow array (a whole column) or a sequence."""
    values = values if isinstance(values, (pyarrow.Array, pyarrow.ChunkedArray)) else pyarrow.array(values)
    if not pyarrow.types.is_integer(values.type):
        raise ValueError(
            f"{where} holds {values.type} values; labels must be integer class ids in [0, {num_classes}) (cast them, "
            "e.g. dataset.cast_column(name, datasets.Value('int64')), or name the right column with label_column)."
        )
    low, high = _min_max(values)
    if low is not None and (low < 0 or high >= num_classes):
        bad = low if low < 0 else high
        raise ValueError(
            f"{where} has label {bad}, outside [0, {num_classes}) (the student and the teacher predict that many "
            "classes)."
        )


def _check_whole_labels(
    dataset: Any, label_column: str | None, label_name: str, num_classes: int, where: str = "the training dataset"
) -> None:
    """Every label at once, before any step: the label column of a `datasets` table, the `targets` of a
    torchvision-style dataset; an empty dataset is an error. Other datasets are checked batch by batch."""
    if isinstance(dataset, datasets.Dataset):
        if len(dataset) == 0:
            raise ValueError(f"{where} is empty.")
        column = _label_column(dataset, label_column, label_name)
        if column is not None:
            _check_label_values(dataset.with_format("arrow")[column], f"{where}'s {column!r} column", num_classes)
        else:
            logger.warning(
                "%s has no label column hf_dis recognises (columns: %s; no ClassLabel, %r or 'label'): its labels "
                "are checked batch by batch as they arrive. Name the column with label_column= to have every label "
                "checked before the first step.", where, dataset.column_names, label_name,
            )  # fmt: skip
        return
    if isinstance(dataset, (torch.utils.data.IterableDataset, datasets.IterableDataset)):
        return
    if len(dataset) == 0:
        raise ValueError(f"{where} is empty.")
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        _check_label_values(np.asarray(targets), f"{where}'s targets", num_classes)


def _check_cached_class_ids(dataset: Any, num_classes: int) -> None:
    """Every row's cached teacher class ids in [0, num_classes), read at once from a `datasets` table's column (a
    pass over integers, without decoding images); the first bad row is named."""
    if not isinstance(dataset, datasets.Dataset) or TOP_CLASSES not in dataset.column_names:
        return
    column = dataset.with_format("arrow")[TOP_CLASSES]
    if _ids_in_range(column, num_classes):
        return
    low, high = _min_max(column)
    row = next(index for index in range(len(column)) if not _ids_in_range(column.slice(index, 1), num_classes))
    raise ValueError(
        f"the training dataset's cached teacher class ids run from {low} to {high}, outside the student's "
        f"[0, {num_classes}) (first at row {row}): the cache was made for other classes, or its column was edited."
    )


def _min_max(values: pyarrow.Array | pyarrow.ChunkedArray) -> tuple[int | None, int | None]:
    while pyarrow.types.is_list(values.type) or pyarrow.types.is_large_list(values.type) or \
            pyarrow.types.is_fixed_size_list(values.type):  # fmt: skip
        values = pc.list_flatten(values)
    low, high = (value.as_py() for value in pc.min_max(values).values())
    return low, high


def _ids_in_range(values: pyarrow.Array | pyarrow.ChunkedArray, num_classes: int) -> bool:
    low, high = _min_max(values)
    return low is None or (low >= 0 and high < num_classes)


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
