r"""Distil a re-ID teacher into a re-ID student with the BoT recipe: 256 x 128 inputs, flip + pad-and-crop + random
erasing, P = 16 identities x K = 4 images, label smoothing 0.1, batch-hard triplet (margin 0.3), Adam 3.5e-4 with a
10-epoch warm-up, x 0.1 at epochs 40 and 70, 120 epochs. Distillation (this recipe's choice: BoT has no
distillation): the embeddings by the similarity-preserving term at weight 3,000, and the identity logits at T = 4
with CE weight 0.9 over the classes the sampler draws (DIS by default); docs/guide.md says why and when to change it.
Defaults: a ResNet-18 student (ImageNet-pretrained, as BoT) of a ResNet-50 teacher trained by `train-teacher`.

    hf-dis distill market1501 --dataset market1501 --data_dir /data/Market-1501-v15.09.15 \
        --teacher_model runs/market-resnet50 --output_dir runs/market-resnet18-dis
    hf-dis distill market1501 --dataset glyphs --glyph_classes 100 --teacher_model runs/glyph-reid-teacher \
        --output_dir runs/glyph-reid-student --num_train_epochs 3

The student is saved to --output_dir with the last epoch's rank-1/5/10, mAP and mINP in eval_results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hf_dis.recipes.data import (
    DataArguments,
    TeacherCacheOption,
    load_cached_training_set,
    load_splits,
    num_labels,
    reid_splits,
)
from hf_dis.recipes.models import ModelOptions, ReIDBackboneOptions, build_reid_model, normalisation
from hf_dis.recipes.optimization import BoTRecipe, recipe_optimizers
from hf_dis.recipes.parsing import parse_recipe_args
from hf_dis.recipes.runner import train_and_report
from hf_dis.trainer import ReIDDistillationArguments, ReIDDistillationTrainer


@dataclass
class StudentArguments(ReIDBackboneOptions, ModelOptions):
    """The student.

    Args:
        student: A timm architecture name or a transformers model (local directory or Hub id); for re-ID, the backbone.
        pretrained, image_size: see `ModelOptions`; last_stride: see `ReIDBackboneOptions`.
    """

    student: str = field(
        default="resnet18",
        metadata={
            "help": "A timm architecture name or a transformers model (local directory or Hub id); for re-ID, the "
            "backbone."
        },
    )


@dataclass
class BoTDistillationArguments(BoTRecipe, TeacherCacheOption, ReIDDistillationArguments):
    """`ReIDDistillationArguments` with the BoT recipe's defaults and this recipe's distillation weights (T = 4, CE
    weight 0.9, embedding term 3,000: the best of the glyph re-ID ablations, docs/studies/glyphs_reid_cpu_small.md),
    and `teacher_cache` (see `TeacherCacheOption`)."""

    temperature: float = field(
        default=4.0, metadata=ReIDDistillationArguments.__dataclass_fields__["temperature"].metadata
    )
    alpha: float = field(default=0.9, metadata=ReIDDistillationArguments.__dataclass_fields__["alpha"].metadata)
    embedding_kd_weight: float = field(
        default=3000.0, metadata=ReIDDistillationArguments.__dataclass_fields__["embedding_kd_weight"].metadata
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[StudentArguments, DataArguments, BoTDistillationArguments]:
    """The recipe's options from `argv` (default: the command line): flags or one YAML / JSON file."""
    return parse_recipe_args((StudentArguments, DataArguments), BoTDistillationArguments, argv, __doc__)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the recipe on `argv` (default: the command line); returns the evaluation metrics."""
    student_args, data, args = parse_args(argv)
    splits = load_splits(data, "reid")
    student = build_reid_model(
        student_args.student,
        num_labels(splits),
        pretrained=student_args.use_pretrained(data),
        seed=args.seed,
        last_stride=student_args.reid_last_stride(data, student_args.student),
    )
    size = student_args.input_size(data, "reid")
    if args.teacher_cache is not None:
        splits["train"] = load_cached_training_set(args.teacher_cache, splits["train"], size)
    train, evaluation = reid_splits(splits, data, normalisation(student, student_args.student), size)
    trainer = ReIDDistillationTrainer(
        model=student,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        optimizers=recipe_optimizers(student, args, len(train), partial_last_batch=False),
    )
    return train_and_report(trainer, data.name("reid"))


if __name__ == "__main__":
    main()
