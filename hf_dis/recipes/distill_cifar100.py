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

from hf_dis.metrics import classification_metrics
from hf_dis.recipes.data import (
    DataArguments,
    TeacherCacheOption,
    classification_splits,
    evaluation_sets,
    load_cached_training_set,
    load_splits,
    num_labels,
)
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
class CIFARDistillationArguments(CIFARRecipe, TeacherCacheOption, DistillationArguments):
    """`DistillationArguments` with the CIFAR KD recipe's defaults (T = 4), and `teacher_cache` (see
    `TeacherCacheOption`)."""

    temperature: float = field(default=4.0, metadata=DistillationArguments.__dataclass_fields__["temperature"].metadata)


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
    during, final = evaluation_sets(test, data)
    trainer = DistillationTrainer(
        model=student,
        args=args,
        train_dataset=train,
        eval_dataset=during,
        compute_metrics=classification_metrics,
        optimizers=recipe_optimizers(student, args, len(train)),
    )
    return train_and_report(trainer, data.name("classification"), final)


if __name__ == "__main__":
    main()
