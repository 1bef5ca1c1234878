"""`DistillationArguments`: `TrainingArguments` plus the distillation, sampling and teacher options.

`HfArgumentParser(DistillationArguments)` reads them from the command line, a YAML file or a JSON file. Options that
belong to one sampler default to None ("that sampler's default") so that setting one for another sampler is caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from hf_dis.losses.distillation import kd_term_weight
from hf_dis.losses.kd import DIVERGENCES
from hf_dis.losses.sampled import ESTIMATORS
from hf_dis.sampling import list_samplers
from hf_dis.sampling.options import (
    check_count,
    check_force_teacher_topk,
    check_fraction,
    check_scope,
    check_temperature,
)
from hf_dis.sampling.registry import parse_num_sampled
from hf_dis.trainer.row_sparse_updates import row_wise_second_moment
from hf_dis.trainer.run_folder import RunFolderOptions

#: sampler="auto": DIS when its head step (drawing and the classifier's update included) takes at most this share of
#: the full head step's time on the training device, else full KD [choice: sampling trades some accuracy for time,
#: so it is chosen where it saves more than a fifth of the head; within 20% the two cost the same and full KD is
#: exact].
AUTO_MAX_HEAD_RATIO = 0.8
#: num_sampled when unset: K such that the batch's draws cover at most about 1 / DEFAULT_COVERAGE_DIVISOR of the
#: classes (B x K <= C / 4, where a sampled step reads far fewer classifier rows than a full one), between
#: DEFAULT_MIN_SAMPLED and DEFAULT_MAX_SAMPLED, and never above a tenth of the classes.
DEFAULT_COVERAGE_DIVISOR = 4
DEFAULT_MIN_SAMPLED = 64
DEFAULT_MAX_SAMPLED = 1024
DEFAULT_MAX_FRACTION = 0.1


def default_num_sampled(num_classes: int, batch_size: int = 1) -> int:
    """K when `num_sampled` is unset: C / (4 B), clipped to [64, 1024], and at most a tenth of the classes (at least
    1). With `batch_size` 1 (unknown): the largest default K for `num_classes`, e.g. for a cache's top R."""
    per_batch = num_classes // (DEFAULT_COVERAGE_DIVISOR * batch_size)
    ceiling = max(1, int(DEFAULT_MAX_FRACTION * num_classes))
    return min(ceiling, DEFAULT_MAX_SAMPLED, max(DEFAULT_MIN_SAMPLED, per_batch))


#: The options that belong to some samplers: those samplers, and the validator the samplers use too.
_OWNED_OPTIONS = {
    "proposal_temperature": (("ftis", "topk"), check_temperature),
    "dis_num_components": (("dis", "auto"), check_count),
    "dis_refit_every": (("dis", "auto"), check_count),
    "dis_prior_min_weight": (("dis", "auto"), check_fraction),
    "dis_stat_decay": (("dis", "auto"), check_fraction),
}


def unpin_memory_without_accelerator(args: TrainingArguments) -> None:
    """No pinned memory on a CPU-only run: nothing to pin for, and torch would warn at every loader it builds."""
    if args.use_cpu or not torch.cuda.is_available():
        args.dataloader_pin_memory = False


@dataclass
class DistillationArguments(RunFolderOptions, TrainingArguments):
    """Arguments of `DistillationTrainer`: all of `TrainingArguments`, and these.

    Args:
        > Distillation

        teacher_model: The teacher, when DistillationTrainer gets no teacher=: a local directory saved with
            save_pretrained, a Hub id (owner/name), or a timm model name (built with its pretrained weights).
        temperature: Distillation temperature T; the KD term is T^2 KL(softmax(z_t/T) || softmax(z_s/T)). Keep it low
            (1 or 2) with thousands of classes: a high T flattens the teacher's target.
        alpha: Weight of the hard-label cross-entropy; the KD term gets 1 - alpha. 0 distils without labels.
        kd_weight: Weight of the KD term instead of 1 - alpha; unset: 1 - alpha. With alpha=1 the KD term is added to
            the whole objective (CE + kd_weight x KD), as fast-reid's logit distillation adds it.
        kd_divergence: The KD term's divergence: forward (Hinton's KL(p_t || p_s)) or symmetric (the mean of both
            directions, as fast-reid's logit distillation; sampled, with the self_normalized estimator only).

        > Class sampling

        sampler: Which classes the KD loss looks at: auto (the default: DIS where its head step, timed once before
            training, takes at most 0.8x the full head's time, else full KD; the choice is printed and written to
            the model card), dis (dynamic importance sampling), ftis (fixed teacher importance sampling), uniform,
            topk (biased baseline), or full (all classes: classic KD).
        num_sampled: Number K of classes drawn per example and step (with replacement): an integer, or a fraction of
            the classes in (0, 1). Unset: C / (4 x batch size), between 64 and 1024, at most a tenth of the classes.
            Must stay unset with sampler=full.
        sample_scope: per_example (each example draws its own set: the faithful mode, and far more accurate in
            short runs) or batch (one set for the whole batch, drawn from the batch-averaged proposal: one dense
            matrix product, the memory-light mode for very many classes).
        kd_estimator: Sampled KD estimator: self_normalized or horvitz_thompson.
        log_q_correction: Subtract log(inclusion probability) from the logits on the sampled set (sampled softmax).
        force_label: Always include the ground-truth label in the sampled set (required by the hard-label term).
        force_teacher_topk: Always include the teacher's top-m classes (the proposal prior); 0 turns it off.
        sampler_eps: Mass of the uniform floor mixed into the proposal (keeps every class reachable).
        proposal_temperature: Temperature of the teacher softmax that ftis draws from (and topk ranks by, in the
            batch scope). Unset: the distillation temperature.

        > Dynamic importance sampling

        dis_num_components: Laplace components of the rank proposal, the prior included. Unset: 3.
        dis_refit_every: Optimizer steps between full-distillation probe steps that refit the proposal (step 0
            included). Unset: 50.
        dis_prior_min_weight: Lower bound on the weight of the prior component (at the teacher's top rank). Unset: 0.5.
        dis_stat_decay: Decay of the moving average of the teacher-student interaction per refit. Unset: 0.7.

        > Classifier updates

        classifier_optimizer: dense (the Trainer's optimizer updates the classifier like any parameter) or row_sparse
            (each step reads and writes only the classifier rows of the classes it sampled, and the weight's
            gradient is sparse over them: lazy momentum and weight decay, see hf_dis.heads.RowSparseAdamW; for very
            many classes). row_sparse follows optim: sgd gives RowSparseSGD (momentum from optim_args), the adamw
            variants RowSparseAdamW (optim_args "second_moment=row": one second moment per classifier row, a third
            less memory for the classifier and its state).
        classifier_parallel: Split the student's classifier over the run's processes (accelerate launch with N >= 2), as
            Partial FC does: each process holds C / N of its rows and their row-sparse optimizer state, gathers every
            process's features and computes the logits of its own classes; the losses are assembled across processes and
            equal one process's with the whole batch. For classifiers too large for one device; needs
            classifier_optimizer='row_sparse' and the forward KL. A live teacher's logits are gathered whole on every
            process ([N B, C]): at that scale, distil from a teacher cache. save_model gathers the rows into one
            ordinary model; evaluation predicts each example's top 5 class ids, merged from every process's rows.
        compile_loss: Compile the distillation loss, full and sampled, forward and backward, with torch.compile: a
            few fused kernels instead of some fifty small ones per step, for steps bound by the host's kernel
            launches (small models and images on a GPU). The first steps, and a new batch size, pay the compilation.
            Experimental; measured in benchmarks/README.md.

        > Teacher input

        teacher_image_size: Resize the batch to this square size for the teacher (bilinear, antialiased); unset: the
            size its image processor fixes, else the student's resolution.

        > Parameters whose default differs from TrainingArguments

        remove_unused_columns: Image datasets with set_transform need their raw columns; False by default here.
        label_column: The training dataset's column the labels come from, checked whole before training (a
            `datasets` table; a torch Dataset's `targets` when it has them, else each batch as it comes). Unset: the
            dataset's `ClassLabel` column, else `label_names[0]` or `label`.
        label_names: The batch key holding the labels; ["labels"] by default, so timm students (whose forward takes
            no labels) still get evaluated.
    """

    # Distillation
    teacher_model: str | None = field(
        default=None,
        metadata={
            "help": "The teacher, when DistillationTrainer gets no teacher=: a local directory saved with "
            "save_pretrained, a Hub id (owner/name), or a timm model name (built with its pretrained weights)."
        },
    )
    temperature: float = field(
        default=2.0,
        metadata={
            "help": "Distillation temperature T; the KD term is T^2 KL(softmax(z_t/T) || softmax(z_s/T)). Keep it low "
            "(1 or 2) with thousands of classes: a high T flattens the teacher's target."
        },
    )
    alpha: float = field(
        default=0.1,
        metadata={
            "help": "Weight of the hard-label cross-entropy; the KD term gets 1 - alpha. 0 distils without labels."
        },
    )
    kd_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the KD term instead of 1 - alpha; unset: 1 - alpha. With alpha=1 the KD term is added "
            "to the whole objective (CE + kd_weight x KD), as fast-reid's logit distillation adds it."
        },
    )
    kd_divergence: str = field(
        default="forward",
        metadata={
            "help": "The KD term's divergence: forward (Hinton's KL(p_t || p_s)) or symmetric (the mean of both "
            "directions, as fast-reid's logit distillation; sampled, with the self_normalized estimator only)."
        },
    )

    # Class sampling
    sampler: str = field(
        default="auto",
        metadata={
            "help": "Which classes the KD loss looks at: auto (the default: DIS where its head step, timed once "
            "before training, takes at most 0.8x the full head's time, else full KD; the choice is printed and "
            "written to the model card), dis (dynamic importance sampling), ftis (fixed teacher importance "
            "sampling), uniform, topk (biased baseline), or full (all classes: classic KD)."
        },
    )
    num_sampled: float | None = field(
        default=None,
        metadata={
            "help": "Number K of classes drawn per example and step (with replacement): an integer, or a fraction of "
            "the classes in (0, 1). Unset: C / (4 x batch size), between 64 and 1024, at most a tenth of the "
            "classes. Must stay unset with sampler=full."
        },
    )
    sample_scope: str = field(
        default="per_example",
        metadata={
            "help": "per_example (each example draws its own set: the faithful mode, and far more accurate in short "
            "runs) or batch (one set for the whole batch, drawn from the batch-averaged proposal: one dense matrix "
            "product, the memory-light mode for very many classes)."
        },
    )
    kd_estimator: str = field(
        default="self_normalized",
        metadata={"help": "Sampled KD estimator: self_normalized or horvitz_thompson."},
    )
    log_q_correction: bool = field(
        default=True,
        metadata={"help": "Subtract log(inclusion probability) from the logits on the sampled set (sampled softmax)."},
    )
    force_label: bool = field(
        default=True,
        metadata={
            "help": "Always include the ground-truth label in the sampled set (required by the hard-label term)."
        },
    )
    force_teacher_topk: int = field(
        default=1,
        metadata={"help": "Always include the teacher's top-m classes (the proposal prior); 0 turns it off."},
    )
    sampler_eps: float = field(
        default=1e-3,
        metadata={"help": "Mass of the uniform floor mixed into the proposal (keeps every class reachable)."},
    )
    proposal_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Temperature of the teacher softmax that ftis draws from (and topk ranks by, in the batch scope). "
            "Unset: the distillation temperature."
        },
    )

    # Dynamic importance sampling
    dis_num_components: int | None = field(
        default=None,
        metadata={"help": "Laplace components of the rank proposal, the prior included. Unset: 3."},
    )
    dis_refit_every: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps between full-distillation probe steps that refit the proposal (step 0 "
            "included). Unset: 50."
        },
    )
    dis_prior_min_weight: float | None = field(
        default=None,
        metadata={"help": "Lower bound on the weight of the prior component (at the teacher's top rank). Unset: 0.5."},
    )
    dis_stat_decay: float | None = field(
        default=None,
        metadata={"help": "Decay of the moving average of the teacher-student interaction per refit. Unset: 0.7."},
    )

    # Classifier updates
    classifier_optimizer: str = field(
        default="dense",
        metadata={
            "help": "dense (the Trainer's optimizer updates the classifier like any parameter) or row_sparse (each "
            "step reads and writes only the classifier rows of the classes it sampled, and the weight's gradient "
            "is sparse over them: lazy momentum and weight decay, see hf_dis.heads.RowSparseAdamW; for very many "
            "classes). row_sparse follows optim: sgd gives RowSparseSGD (momentum from optim_args), the adamw "
            "variants RowSparseAdamW (optim_args 'second_moment=row': one second moment per classifier row, a third "
            "less memory for the classifier and its state)."
        },
    )

    classifier_parallel: bool = field(
        default=False,
        metadata={
            "help": (
                "Split the student's classifier over the run's processes (accelerate launch with N >= 2), as Partial "
                "FC does: each process holds C / N of its rows and their row-sparse optimizer state, gathers every "
                "process's features and computes the logits of its own classes; the losses are assembled across "
                "processes and equal one process's with the whole batch. For classifiers too large for one device; "
                "needs classifier_optimizer='row_sparse' and the forward KL. A live teacher's logits are gathered "
                "whole on every process ([N B, C]): at that scale, distil from a teacher cache. save_model gathers "
                "the rows into one ordinary model; evaluation predicts each example's top 5 class ids, merged from "
                "every process's rows."
            )
        },
    )

    compile_loss: bool = field(
        default=False,
        metadata={
            "help": "Compile the distillation loss, full and sampled, forward and backward, with torch.compile: a few "
            "fused kernels instead of some fifty small ones per step, for steps bound by the host's kernel launches "
            "(small models and images on a GPU). The first steps, and a new batch size, pay the compilation. "
            "Experimental; measured in benchmarks/README.md."
        },
    )

    # Teacher input
    teacher_image_size: int | None = field(
        default=None,
        metadata={
            "help": "Resize the batch to this square size for the teacher (bilinear, antialiased); unset: the size "
            "its image processor fixes, else the student's resolution."
        },
    )

    # Parameters whose default differs from TrainingArguments
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Image datasets with set_transform need their raw columns; False by default here."},
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "The training dataset's column the labels come from, checked whole before training (a datasets "
            "table). Unset: its ClassLabel column, else label_names[0] or 'label'."
        },
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={
            "help": "The batch key holding the labels; ['labels'] by default, so timm students (whose forward takes "
            "no labels) still get evaluated."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        unpin_memory_without_accelerator(self)
        check_temperature(self.temperature)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0.0, 1.0], got {self.alpha}.")
        if self.kd_weight is not None and not self.kd_weight >= 0:
            raise ValueError(f"kd_weight must be >= 0 (or unset for 1 - alpha), got {self.kd_weight}.")
        if self.sampler not in (*list_samplers(), "auto"):
            raise ValueError(f"Unknown sampler {self.sampler!r}; choose one of {[*list_samplers(), 'auto']}.")
        check_scope(self.sample_scope, "sample_scope")
        if self.kd_estimator not in ESTIMATORS:
            raise ValueError(f"kd_estimator must be one of {list(ESTIMATORS)}, got {self.kd_estimator!r}.")
        if self.kd_divergence not in DIVERGENCES:
            raise ValueError(f"kd_divergence must be one of {list(DIVERGENCES)}, got {self.kd_divergence!r}.")
        if self.kd_divergence != "forward" and self.kd_estimator != "self_normalized" and self.sampler != "full":
            raise ValueError(
                f"kd_divergence={self.kd_divergence!r} has the self_normalized estimator only (the Horvitz-Thompson "
                "one estimates KL(p_t || p_s)); set kd_estimator='self_normalized'."
            )
        self.num_sampled = _check_num_sampled(self.num_sampled, self.sampler)
        if self.sampler != "full" and self.alpha > 0 and not self.force_label:
            raise ValueError(
                f"force_label=False contradicts alpha={self.alpha}: the sampled hard-label term needs the label in "
                "the sampled set. Keep force_label=True, or set alpha=0."
            )
        check_force_teacher_topk(self.force_teacher_topk)
        check_fraction(self.sampler_eps, "sampler_eps")
        for name, (samplers, check) in _OWNED_OPTIONS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if self.sampler not in samplers:
                raise ValueError(
                    f"{name} applies to sampler {' or '.join(samplers)}, but sampler={self.sampler!r}: unset it or "
                    "change the sampler."
                )
            check(value, name)
        if self.classifier_optimizer not in ("dense", "row_sparse"):
            raise ValueError(
                f"classifier_optimizer must be 'dense' or 'row_sparse', got {self.classifier_optimizer!r}."
            )
        if self.classifier_optimizer == "row_sparse":
            if self.fp16:
                raise ValueError(
                    "classifier_optimizer='row_sparse' does not support fp16 (its loss scaler would not unscale the "
                    "classifier's gradients): use bf16."
                )
            optim = getattr(self.optim, "value", self.optim)  # an OptimizerNames after TrainingArguments' checks
            if not (optim == "sgd" or optim.startswith("adamw_torch")):
                raise ValueError(
                    f"classifier_optimizer='row_sparse' has SGD and AdamW variants; optim={optim!r} has none. "
                    "Use optim='sgd' or 'adamw_torch' / 'adamw_torch_fused'."
                )
            if row_wise_second_moment(self.optim_args) and optim == "sgd":
                raise ValueError("optim_args second_moment=row is an AdamW option; optim='sgd' has no second moment.")
        elif row_wise_second_moment(self.optim_args):
            raise ValueError("optim_args second_moment=row is an option of classifier_optimizer='row_sparse'.")
        if self.classifier_parallel:
            _check_classifier_parallel(self)
        if self.teacher_image_size is not None and self.teacher_image_size < 1:
            raise ValueError(f"teacher_image_size must be >= 1, got {self.teacher_image_size}.")
        if not self.label_names:
            raise ValueError("label_names must name the batch key that holds the labels (default ['labels']).")

    @property
    def kd_term_weight(self) -> float:
        """The KD term's weight: `kd_weight`, or 1 - alpha when unset."""
        return kd_term_weight(self.alpha, self.kd_weight)

    def num_sampled_for(self, num_classes: int, sampler: str | None = None) -> int | float | None:
        """K for C classes with `sampler` (default `self.sampler`; auto's choice once made): `num_sampled`, or the
        default for this batch size (`default_num_sampled`); None for full."""
        if (sampler or self.sampler) == "full":
            return None
        if self.num_sampled is not None:
            return self.num_sampled
        return default_num_sampled(num_classes, self.per_device_train_batch_size)

    def sampler_options(self, sampler: str | None = None) -> dict[str, Any]:
        """Keyword options of `build_sampler` for `sampler` (default `self.sampler`; auto's choice once made), unset
        sampler-specific options left to it."""
        sampler = sampler or self.sampler
        options: dict[str, Any] = {"scope": self.sample_scope, "seed": self.seed}
        if sampler != "full":
            options.update(
                force_label=self.force_label, force_teacher_topk=self.force_teacher_topk, eps=self.sampler_eps
            )
        if sampler in _OWNED_OPTIONS["proposal_temperature"][0]:
            options["proposal_temperature"] = (
                self.temperature if self.proposal_temperature is None else self.proposal_temperature
            )
        if sampler == "dis":
            dis = {
                "num_components": self.dis_num_components,
                "refit_every": self.dis_refit_every,
                "prior_min_weight": self.dis_prior_min_weight,
                "stat_decay": self.dis_stat_decay,
            }
            options.update({key: value for key, value in dis.items() if value is not None})
        return options


def _check_classifier_parallel(args: DistillationArguments) -> None:
    """What a classifier sharded over processes does not have (yet), each with what to set instead."""
    refused = {
        "classifier_optimizer='dense'": (
            args.classifier_optimizer != "row_sparse",
            "classifier_optimizer='row_sparse' (each process updates and saves its own rows' state)",
        ),
        f"kd_divergence={args.kd_divergence!r}": (args.kd_divergence != "forward", "kd_divergence='forward'"),
        "even_batches=False": (
            not args.accelerator_config.even_batches,
            "accelerator_config's even_batches=True, the default (every process's batch is gathered: all must have "
            "the same size)",
        ),
    }
    found = {name: hint for name, (refuse, hint) in refused.items() if refuse}
    if found:
        raise ValueError(
            f"classifier_parallel=True does not support {', '.join(found)}: set {'; '.join(found.values())}."
        )


def _check_num_sampled(num_sampled: float | None, sampler: str) -> int | float | None:
    """`parse_num_sampled`'s K or fraction, None for full (which must leave it unset)."""
    if num_sampled is None:
        return None
    if sampler == "full":
        raise ValueError(f"sampler='full' uses every class; num_sampled={num_sampled} contradicts it (leave it unset).")
    return parse_num_sampled(num_sampled)
