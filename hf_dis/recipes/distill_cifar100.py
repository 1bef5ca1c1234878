r"""Distil a CIFAR-100 (or glyph) teacher into a student with the CIFAR KD literature's recipe: 240 epochs, batch 64,
SGD lr 0.05 (momentum 0.9, weight decay 5e-4) x 0.1 at epochs 150, 180 and 210, T = 4, CE weight 0.1 / KD 0.9, over
the classes the sampler of choice draws (DIS by default; `--sampler full` is classic KD).

    hf-dis distill cifar100 --dataset cifar100 --teacher_model runs/c100-resnet50 --student resnet18 \
        --output_dir runs/c100-resnet18-dis
    hf-dis distill cifar100 --dataset glyphs --glyph_classes 200 --teacher_model runs/glyph-teacher \
        --student resnet18 --output_dir runs/glyph-student --num_train_epochs 3

With `--teacher_cache FOLDER` (written by `hf-dis cache-teacher`) the teacher's logits come from the saved training
set and no teacher is loaded or run. The student is saved to --output_dir with the last epoch's top-1 / top-5 in
eval_results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets

from hf_dis.data import TEACHER_CACHE_COLUMNS, teacher_cache_info
from hf_dis.metrics import classification_metrics
from hf_dis.recipes.data import DataArguments, classification_splits, load_splits, num_labels
from hf_dis.recipes.models import ModelOptions, build_classifier, normalisation
from hf_dis.recipes.optimization import CIFARRecipe, recipe_optimizers
from hf_dis.recipes.parsing import parse_recipe_args
from hf_dis.recipes.runner import train_and_report
from hf_dis.trainer import DistillationArguments, DistillationTrainer


@dataclass
class StudentArguments(ModelOptions):
    """The student.

    Args:
        student: A timm architecture name or a transformers model (local directory or Hub id).
        pretrained, image_size: see `ModelOptions`.
    """

    student: str = field(
        default="resnet18",
        metadata={"help": "A timm architecture name or a transformers model (local directory or Hub id)."},
    )


@dataclass
class CIFARDistillationArguments(CIFARRecipe, DistillationArguments):
    """`DistillationArguments` with the CIFAR KD recipe's defaults (T = 4), and `teacher_cache`: a training set saved
    by `hf-dis cache-teacher`, to distil from its cached teacher logits instead of running the teacher."""

    temperature: float = field(default=4.0, metadata=DistillationArguments.__dataclass_fields__["temperature"].metadata)
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "A training set saved by `hf-dis cache-teacher`: distil from its cached teacher logits instead of "
            "running the teacher (then --teacher_model is optional)."
        },
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[StudentArguments, DataArguments, CIFARDistillationArguments]:
    """The recipe's options from `argv` (default: the command line): flags or one YAML / JSON file."""
    return parse_recipe_args((StudentArguments, DataArguments), CIFARDistillationArguments, argv, __doc__)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the recipe on `argv` (default: the command line); returns the evaluation metrics."""
    student_args, data, args = parse_args(argv)
    splits = load_splits(data, "classification")
    student = build_classifier(
        student_args.student, num_labels(splits), pretrained=student_args.use_pretrained(data), seed=args.seed
    )
    size = student_args.input_size(data, "classification")
    if args.teacher_cache is not None:
        splits["train"] = load_cached_training_set(args.teacher_cache, splits["train"], size)
    train, test = classification_splits(splits, data, normalisation(student, student_args.student), size)
    trainer = DistillationTrainer(
        model=student,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        compute_metrics=classification_metrics,
        optimizers=recipe_optimizers(student, args, len(train)),
    )
    return train_and_report(trainer, data.name("classification"))


def load_cached_training_set(path: str, train: datasets.Dataset, input_size: tuple[int, int]) -> datasets.Dataset:
    """The training set `hf-dis cache-teacher` saved at `path`, checked against the recipe's: the same images in the
    same order (labels), and augmented views made at the student's input size."""
    cached = datasets.load_from_disk(path)
    info = teacher_cache_info(cached)
    if info is None or not set(TEACHER_CACHE_COLUMNS) <= set(cached.column_names):
        raise ValueError(f"{path} holds no teacher cache: write one with `hf-dis cache-teacher`.")
    if len(cached) != len(train) or cached["label"] != train["label"]:
        raise ValueError(
            f"the teacher cache at {path} was made on another training set ({len(cached):,} images, this recipe's "
            f"has {len(train):,} or other labels): make it with the same --dataset options."
        )
    if info["num_views"] is not None and info.get("image_size") not in (None, input_size[0]):
        raise ValueError(
            f"the teacher cache's augmented views were made at {info['image_size']} px and the student trains at "
            f"{input_size[0]} px: the views would not match; cache again with --image_size {input_size[0]}."
        )
    return cached


if __name__ == "__main__":
    main()
