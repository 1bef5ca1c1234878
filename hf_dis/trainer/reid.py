"""Re-identification training on the Trainer: `ReIDTrainer` (a teacher, or any model, trained with the BoT losses) and
`ReIDDistillationTrainer` (a student distilled from a re-ID teacher with the sampled KD objective on the identity
logits, plus the triplet loss and, optionally, a similarity-preserving term on the embeddings), with their
arguments.

What the re-ID trainers add, and where:
- `_get_train_sampler`: P x K batches from `hf_dis.data.IdentitySampler` (P = per-device batch / K), dealt so that
  each process gets whole P x K blocks and no identity is shared by two processes in a step.
- the loss: identity cross-entropy (label smoothing from `label_smoothing_factor`) or, for the student, the
  distillation objective, plus `triplet_weight` x the batch-hard triplet loss on the pooled features.
- evaluation: on `hf_dis.data.reid_eval_dataset(query, gallery)`, `prediction_step` embeds every image (the BNNeck
  output) and `compute_metrics` (by default `reid_eval_metrics`) reports rank-1/5/10, mAP and mINP under the
  Market-1501 protocol. Other evaluation sets (with labels) go through the usual loss-based path.

The models are expected to return `features` and `embeddings` besides `logits`, as `hf_dis.models.ReIDModel` does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_dis.data.identity_sampler import IdentitySampler
from hf_dis.data.reid import REID_EVAL_KEYS
from hf_dis.data.teacher_cache import TEACHER_EMBEDDINGS
from hf_dis.losses import batch_hard_triplet_loss, similarity_preserving_loss
from hf_dis.metrics import reid_eval_metrics
from hf_dis.trainer.arguments import DistillationArguments
from hf_dis.trainer.buffer_sync import BufferSyncCallback
from hf_dis.trainer.guard import GuardedTraining
from hf_dis.trainer.loss_logging import LossPartsLogging
from hf_dis.trainer.run_folder import RunFolderOptions
from hf_dis.trainer.trainer import DistillationTrainer


@dataclass
class ReIDOptions:
    """Re-ID options shared by `ReIDTrainingArguments` and `ReIDDistillationArguments`.

    Args:
        instances_per_identity: K, the images of each identity in a batch; the per-device batch size must be a
            multiple of it (P = batch size / K identities per batch). Identities with fewer images repeat some.
        triplet_margin: Margin of the batch-hard triplet loss; unset (None) uses the soft margin.
        triplet_weight: Weight of the triplet loss (added to the identity or distillation loss); 0 turns it off.
        reid_distance: Distance used for retrieval at evaluation: euclidean or cosine.
    """

    instances_per_identity: int = field(
        default=4,
        metadata={
            "help": "K, the images of each identity in a batch; the per-device batch size must be a multiple of it "
            "(P = batch size / K identities per batch). Identities with fewer images repeat some."
        },
    )
    triplet_margin: float | None = field(
        default=0.3, metadata={"help": "Margin of the batch-hard triplet loss; unset (None) uses the soft margin."}
    )
    triplet_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the triplet loss (added to the identity or distillation loss); 0 turns it off."},
    )
    reid_distance: str = field(
        default="euclidean", metadata={"help": "Distance used for retrieval at evaluation: euclidean or cosine."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.instances_per_identity < 1:
            raise ValueError(f"instances_per_identity must be >= 1, got {self.instances_per_identity}.")
        if self.per_device_train_batch_size % self.instances_per_identity:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"instances_per_identity ({self.instances_per_identity}): a batch is P identities x K images."
            )
        if self.triplet_margin is not None and self.triplet_margin <= 0:
            raise ValueError(f"triplet_margin must be > 0 (or unset for the soft margin), got {self.triplet_margin}.")
        if self.triplet_weight < 0:
            raise ValueError(f"triplet_weight must be >= 0, got {self.triplet_weight}.")
        if self.reid_distance not in ("euclidean", "cosine"):
            raise ValueError(f"reid_distance must be 'euclidean' or 'cosine', got {self.reid_distance!r}.")


@dataclass
class ReIDTrainingArguments(ReIDOptions, RunFolderOptions, TrainingArguments):
    """`TrainingArguments` plus `ReIDOptions`, for `ReIDTrainer`.

    Args:
        remove_unused_columns: Image datasets with set_transform need their raw columns; False by default here.
        label_names: The batch key holding the identity labels; ["labels"] by default.
    """

    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Image datasets with set_transform need their raw columns; False by default here."},
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={"help": "The batch key holding the identity labels; ['labels'] by default."},
    )


@dataclass
class ReIDDistillationArguments(ReIDOptions, DistillationArguments):
    """`DistillationArguments` plus `ReIDOptions`, for `ReIDDistillationTrainer`.

    Args:
        embedding_kd_weight: Weight of the similarity-preserving term on the embeddings (the student learns the
            teacher's `[B, B]` similarities between the batch's embeddings; Tung & Mori 2019), added to the
            objective; 0 turns it off. Both models must return `embeddings` (`hf_dis.models.ReIDModel` does), or
            the teacher cache must hold them.
    """

    embedding_kd_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the similarity-preserving term on the embeddings (the student learns the teacher's "
            "pairwise similarities over the batch; Tung & Mori 2019), added to the objective; 0 turns it off."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.embedding_kd_weight >= 0:
            raise ValueError(f"embedding_kd_weight must be >= 0, got {self.embedding_kd_weight}.")
        if self.classifier_parallel:
            raise ValueError(
                "classifier_parallel=True is not supported by the re-ID trainer yet (its triplet and embedding terms "
                "are per process, the sharded logits over every process's batch); leave it off."
            )


class _ReIDTraining:
    """The P x K sampler, the re-ID evaluation and the triplet term, shared by both re-ID trainers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.compute_metrics is None:
            self.compute_metrics = functools.partial(reid_eval_metrics, metric=self.args.reid_distance)

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        # A private Trainer hook (no public one chooses the sampler); the rest of the data loader stays the Trainer's.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, torch.utils.data.IterableDataset):
            raise ValueError("re-ID training draws P x K batches by index: the training dataset must not be iterable.")
        k = self.args.instances_per_identity
        return IdentitySampler(
            _identity_labels(dataset, self.args.label_names[0]),
            k,
            self._train_batch_size // k,
            num_replicas=self.args.world_size,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
        )

    def triplet_loss(self, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        features = outputs.get("features") if isinstance(outputs, dict) else None
        if features is None:
            raise ValueError(
                f"the model returns no 'features' (got {type(outputs).__name__}), which the triplet loss needs: use "
                "hf_dis.models.ReIDModel, or set triplet_weight=0."
            )
        return batch_hard_triplet_loss(features, labels, self.args.triplet_margin)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if not all(key in inputs for key in REID_EVAL_KEYS):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            embeddings = model(inputs["pixel_values"])["embeddings"].float()
        ids = torch.stack([torch.as_tensor(inputs[key]).long() for key in REID_EVAL_KEYS], dim=1)
        return None, embeddings, ids.to(embeddings.device)


class ReIDTrainer(_ReIDTraining, LossPartsLogging, GuardedTraining, Trainer):
    """Train a re-ID model (e.g. the teacher) with the BoT losses: label-smoothed identity cross-entropy plus the
    batch-hard triplet loss, on P x K batches; `evaluate()` on a query/gallery set reports the re-ID metrics.

    Takes `Trainer`'s keywords; `args` must be a `ReIDTrainingArguments`.
    """

    def __init__(self, model: nn.Module | None = None, args: ReIDTrainingArguments | None = None, **kwargs: Any):
        if not isinstance(args, ReIDTrainingArguments):
            raise TypeError(f"args must be a ReIDTrainingArguments, got {type(args).__name__}.")
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(BufferSyncCallback())

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = inputs[self.args.label_names[0]]
        outputs = model(inputs["pixel_values"])
        mode = "train" if model.training else "eval"
        ce = F.cross_entropy(outputs["logits"].float(), labels, label_smoothing=self.args.label_smoothing_factor)
        self.loss_parts[mode].add("ce_loss", ce)
        loss = ce
        if self.args.triplet_weight > 0:
            triplet = self.triplet_loss(outputs, labels)
            self.loss_parts[mode].add("triplet_loss", triplet)
            loss = loss + self.args.triplet_weight * triplet
        # Batches are all P x K, so the Trainer's division by the accumulation steps gives the accumulated mean.
        return (loss, {"logits": outputs["logits"]}) if return_outputs else loss


class ReIDDistillationTrainer(_ReIDTraining, DistillationTrainer):
    """Distil a re-ID teacher into a re-ID student: the `DistillationTrainer` objective on the identity logits (DIS
    by default), plus `triplet_weight` x the batch-hard triplet loss on the student's features, on P x K batches;
    `evaluate()` on a query/gallery set reports the re-ID metrics.

    Takes `DistillationTrainer`'s keywords; `args` must be a `ReIDDistillationArguments`.
    """

    def __init__(self, model: nn.Module | None = None, args: ReIDDistillationArguments | None = None, **kwargs: Any):
        if not isinstance(args, ReIDDistillationArguments):
            raise TypeError(f"args must be a ReIDDistillationArguments, got {type(args).__name__}.")
        super().__init__(model=model, args=args, **kwargs)

    def auxiliary_losses(
        self, outputs: Any, labels: torch.Tensor | None, teacher_outputs: Any = None
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """The triplet term on the student's features and, with `embedding_kd_weight`, the similarity-preserving
        term between the student's and the teacher's embeddings of the batch (on each process's own batch: B x B,
        whatever C; left out of an evaluation without a teacher, as the KD term is)."""
        losses = {}
        if self.args.triplet_weight > 0:
            if labels is None:
                raise ValueError("the triplet loss needs identity labels in the batch (or set triplet_weight=0).")
            losses["triplet_loss"] = (self.args.triplet_weight, self.triplet_loss(outputs, labels))
        if self.args.embedding_kd_weight > 0 and teacher_outputs is not None:
            student, teacher = _embeddings_of(outputs, "student"), _embeddings_of(teacher_outputs, "teacher")
            losses["embedding_kd_loss"] = (self.args.embedding_kd_weight, similarity_preserving_loss(student, teacher))
        return losses

    def _check_training_data(self) -> dict[str, Any] | None:
        """The distillation trainer's checks, and with `embedding_kd_weight` that both models give embeddings (one
        example, the student in evaluation mode), before anything is written."""
        batch = super()._check_training_data()
        if batch is None or self.args.embedding_kd_weight == 0:
            return batch
        pixel_values = batch["pixel_values"].to(self.accelerator.device)
        model = self.model
        training = model.training
        with torch.no_grad():
            _embeddings_of(model.eval()(pixel_values), "student")
        model.train(training)
        if TEACHER_EMBEDDINGS in batch:
            return batch
        if self.teacher is None:
            raise ValueError(
                f"embedding_kd_weight={self.args.embedding_kd_weight} needs the teacher's embeddings, but the teacher "
                f"cache has no {TEACHER_EMBEDDINGS!r} column: cache the logits again with a teacher that returns "
                "embeddings (hf_dis.models.ReIDModel), or pass teacher=."
            )
        _embeddings_of(self.teacher_outputs(pixel_values), "teacher")
        return batch


def _embeddings_of(outputs: Any, role: str) -> torch.Tensor:
    """The `embeddings` of a model's outputs (or of a cached teacher's), or a clear error naming the model."""
    embeddings = outputs.get("embeddings") if isinstance(outputs, dict) else getattr(outputs, "embeddings", None)
    if embeddings is None:
        raise ValueError(
            f"embedding_kd_weight > 0 needs the {role}'s embeddings, but its outputs have none "
            f"({type(outputs).__name__}): use a re-ID model that returns `embeddings` (hf_dis.models.ReIDModel), or "
            "set embedding_kd_weight=0."
        )
    return embeddings


def _identity_labels(dataset: Any, label_name: str) -> np.ndarray:
    """The identity of every row: the label column of a `datasets` table (read without decoding images), else each
    item's label."""
    if isinstance(dataset, datasets.Dataset):
        column = next((name for name in (label_name, "label") if name in dataset.column_names), None)
        if column is None:
            raise ValueError(f"the training dataset has no {label_name!r} or 'label' column ({dataset.column_names}).")
        return dataset.with_format("numpy")[column]
    return np.array([int(dataset[index][label_name]) for index in range(len(dataset))])
