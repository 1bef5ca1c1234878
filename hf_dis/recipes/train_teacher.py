r"""Train a teacher: an image classifier (CIFAR-100 or glyphs) with the CIFAR KD literature's recipe, or a re-ID model
(Market-1501 or glyphs) with BoT's, from a timm architecture or a transformers model.

    hf-dis train-teacher --task classification --dataset cifar100 --model resnet50 --output_dir runs/c100-resnet50
    hf-dis train-teacher --task reid --dataset market1501 --data_dir /data/Market-1501-v15.09.15 --model resnet50 \
        --pretrained true --output_dir runs/market-resnet50
    hf-dis train-teacher --task classification --dataset glyphs --glyph_classes 200 --output_dir runs/glyph-teacher \
        --num_train_epochs 3

Classification: cross-entropy (the model's own; with --sampled_classes K, over the batch's labels and K sampled
classes, for 10^5+ classes), SGD 0.05 x 0.1 at epochs 150/180/210 of 240, top-1 / top-5.
Re-ID: `ReIDTrainer` (label-smoothed CE + batch-hard triplet on P x K batches), Adam 3.5e-4 with warm-up, 120 epochs,
rank-1/5/10, mAP and mINP. The model is saved to --output_dir (pass that folder as --teacher_model to a distillation
recipe) with the last epoch's metrics in eval_results.json. Every default can be overridden by its flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import Trainer, TrainingArguments

from hf_dis.metrics import classification_metrics, top_classes_for_metrics
from hf_dis.models import dataset_class_names, set_class_names
from hf_dis.recipes.data import (
    DataArguments,
    classification_splits,
    evaluation_sets,
    evaluation_view,
    load_splits,
    num_labels,
    reid_splits,
)
from hf_dis.recipes.models import ModelOptions, ReIDBackboneOptions, build_classifier, build_reid_model, normalisation
from hf_dis.recipes.optimization import BoTRecipe, CIFARRecipe, recipe_optimizers
from hf_dis.recipes.parsing import parse_recipe_args
from hf_dis.recipes.runner import train_and_report
from hf_dis.trainer import (
    BufferSyncCallback,
    GuardedTraining,
    ImprintHeadCallback,
    ReIDTrainer,
    ReIDTrainingArguments,
    RunFolderOptions,
)
from hf_dis.trainer.sampled_softmax import SampledSoftmaxTraining

TASKS = ("classification", "reid")


@dataclass
class ModelArguments(ReIDBackboneOptions, ModelOptions):
    """The model to train.

    Args:
        task: classification or reid.
        model: A timm architecture name (resnet50, ...) or a transformers model (local directory or Hub id); for
            re-ID, the backbone.
        pretrained, image_size: see `ModelOptions`; last_stride (re-ID): see `ReIDBackboneOptions`.
    """

    task: str = field(default="classification", metadata={"help": "classification or reid."})
    model: str = field(
        default="resnet18",
        metadata={
            "help": "A timm architecture name (resnet50, ...) or a transformers model (local directory or Hub id); for "
            "re-ID, the backbone."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}.")
        if self.task == "classification" and self.last_stride is not None:
            raise ValueError("last_stride is a re-ID backbone option (--task reid).")


@dataclass
class ClassificationTeacherArguments(CIFARRecipe, RunFolderOptions, TrainingArguments):
    """`TrainingArguments` with the CIFAR KD recipe's defaults, keeping the image column for the transform."""

    remove_unused_columns: bool = field(
        default=False, metadata=ReIDTrainingArguments.__dataclass_fields__["remove_unused_columns"].metadata
    )
    sampled_classes: int = field(
        default=0,
        metadata={
            "help": "K > 0: each step's softmax covers the batch's labels and other classes drawn uniformly, K in "
            "all (Partial FC: a teacher with 10^5+ classes trains at the cost of K classifier rows); 0: every class."
        },
    )

    imprint_head: bool = field(
        default=False,
        metadata={
            "help": "After training, set the classifier's rows from the training images' class-mean features (weight "
            "imprinting, with a fitted scale), before the final evaluation and the save: for many classes with a few "
            "images each, where a trained head lags its features (docs/method.md)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampled_classes < 0:
            raise ValueError(f"sampled_classes must be >= 0 (0: every class), got {self.sampled_classes}.")


class ClassifierTrainer(SampledSoftmaxTraining, GuardedTraining, Trainer):
    """The Trainer, with hf_dis's guards (divergence, reused output folders, incomplete checkpoints) and, with
    `sampled_classes`, a softmax over sampled classes in training."""


@dataclass
class ReIDTeacherArguments(BoTRecipe, ReIDTrainingArguments):
    """`ReIDTrainingArguments` with the BoT recipe's defaults."""


def _arguments_type(scripts: tuple) -> type:
    return ReIDTeacherArguments if scripts[0].task == "reid" else ClassificationTeacherArguments


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The recipe's options from `argv` (default: the command line): flags or one YAML / JSON file; the training
    arguments are `ReIDTeacherArguments` for --task reid, else `ClassificationTeacherArguments`."""
    return parse_recipe_args((ModelArguments, DataArguments), _arguments_type, argv, __doc__)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the recipe on `argv` (default: the command line); returns the evaluation metrics."""
    model_args, data, args = parse_args(argv)
    splits = load_splits(data, model_args.task)
    pretrained, size = model_args.use_pretrained(data), model_args.input_size(data, model_args.task)
    if model_args.task == "reid":
        model = build_reid_model(
            model_args.model,
            num_labels(splits),
            pretrained=pretrained,
            seed=args.seed,
            last_stride=model_args.reid_last_stride(data, model_args.model),
        )
        train, evaluation = reid_splits(splits, data, normalisation(model, model_args.model), size)
        final = evaluation
        trainer_type, extra = ReIDTrainer, {}
    else:
        model = build_classifier(model_args.model, num_labels(splits), pretrained=pretrained, seed=args.seed)
        names = dataset_class_names(splits["train"], ("label",))
        if names is not None:  # saved with the teacher: its students are checked against them
            set_class_names(model, names)
        train, test = classification_splits(splits, data, normalisation(model, model_args.model), size)
        evaluation, final = evaluation_sets(test, data)
        imprinting = []
        if args.imprint_head:  # the class means of the images as they are, not of random crops
            images = evaluation_view(splits["train"], data, normalisation(model, model_args.model), size)
            imprinting = [ImprintHeadCallback(images, eval_dataset=evaluation, seed=args.seed)]
        trainer_type, extra = (
            ClassifierTrainer,
            {"compute_metrics": classification_metrics, "preprocess_logits_for_metrics": top_classes_for_metrics,
             "callbacks": [BufferSyncCallback(), *imprinting]},
        )
    trainer = trainer_type(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        optimizers=recipe_optimizers(model, args, len(train), partial_last_batch=model_args.task != "reid"),
        **extra,
    )
    return train_and_report(trainer, final_eval_dataset=final)


if __name__ == "__main__":
    main()
