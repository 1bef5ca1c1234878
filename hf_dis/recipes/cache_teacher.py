r"""Run a trained teacher once over a training set and save the set with the teacher's logits
(`hf_dis.data.cache_teacher_logits`), so that `hf-dis distill cifar100 --teacher_cache FOLDER` (or `distill
market1501`, with `--task reid`) distils without loading or running the teacher.

    hf-dis cache-teacher --dataset glyphs --glyph_classes 200 --teacher_model runs/glyph-teacher --num_views 4 \
        --output_dir runs/glyph-teacher-cache
    hf-dis distill cifar100 --dataset glyphs --glyph_classes 200 --teacher_cache runs/glyph-teacher-cache \
        --student resnet10t --output_dir runs/glyph-student-cached

With --num_views V, the cache holds the teacher's logits on V augmented views of each image, made by the
distillation recipe's training augmentation at its input size, and the student is shown exactly those views (one
drawn per image each epoch); without it, the teacher's logits on the un-augmented image (the student still trains on
augmented images). The teacher sees its own normalisation, the student its own: the views' geometry is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hf_dis.data import cache_teacher_logits
from hf_dis.recipes.data import (
    DataArguments,
    classification_transforms,
    load_splits,
    num_labels,
    reid_transforms,
)
from hf_dis.recipes.models import ModelOptions, normalisation
from hf_dis.recipes.parsing import parse_recipe_args
from hf_dis.sampling import build_sampler
from hf_dis.trainer.arguments import default_num_sampled
from hf_dis.trainer.teacher import load_teacher


@dataclass
class CacheArguments:
    """The teacher, the cache and where it goes.

    Args:
        task: classification (for `distill cifar100`) or reid (for `distill market1501`).
        teacher_model: The trained teacher: a local directory, a Hub id or a timm name.
        output_dir: The folder to save the training set with the teacher's logits to.
        top_r: Classes whose logits are kept exactly per image (the others share one). Unset: the rank limit DIS
            draws from at its default K (every class up to 1,024 classes).
        num_views: Augmented views cached per image (the recipe's training augmentation, seeded). Unset: one
            un-augmented view.
        seed: Seed of the views.
        image_size: Input side (classification) or height (re-ID), as the distillation recipe's --image_size.
            Unset: the recipe's (256 for Market-1501, 32 otherwise).
        batch_size: Images per teacher forward.
    """

    task: str = field(
        default="classification",
        metadata={"help": "classification (for `distill cifar100`) or reid (for `distill market1501`)."},
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "The trained teacher: a local directory, a Hub id or a timm name."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "The folder to save the training set with the teacher's logits to."}
    )
    top_r: int | None = field(
        default=None,
        metadata={
            "help": "Classes whose logits are kept exactly per image (the others share one). Unset: the rank limit "
            "DIS draws from at its default K (every class up to 1,024 classes)."
        },
    )
    num_views: int | None = field(
        default=None,
        metadata={
            "help": "Augmented views cached per image (the recipe's training augmentation, seeded). Unset: one "
            "un-augmented view."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the views."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input side (classification) or height (re-ID), as the distillation recipe's --image_size. Unset: "
            "the recipe's (256 for Market-1501, 32 otherwise)."
        },
    )
    batch_size: int = field(default=256, metadata={"help": "Images per teacher forward."})

    def __post_init__(self) -> None:
        if not self.teacher_model or not self.output_dir:
            raise ValueError("--teacher_model and --output_dir are required.")
        if self.task not in ("classification", "reid"):
            raise ValueError(f"task must be classification or reid, got {self.task!r}.")


def parse_args(argv: Sequence[str] | None = None) -> tuple[DataArguments, CacheArguments]:
    """The command's options from `argv` (default: the command line): flags or one YAML / JSON file."""
    return parse_recipe_args((DataArguments,), CacheArguments, argv, __doc__)


def main(argv: Sequence[str] | None = None) -> Path:
    """Cache and save; returns the folder."""
    data, options = parse_args(argv)
    output = Path(options.output_dir)
    if (output / "dataset_info.json").is_file():
        raise ValueError(f"{output} already holds a saved dataset; choose another --output_dir or remove it.")
    splits = load_splits(data, options.task)
    num_classes = num_labels(splits)
    teacher = load_teacher(options.teacher_model)
    size = ModelOptions(image_size=options.image_size).input_size(data, options.task)
    transforms = classification_transforms if options.task == "classification" else reid_transforms
    transform = transforms(
        data, normalisation(teacher, options.teacher_model), size, training=options.num_views is not None
    )
    top_r = options.top_r or build_sampler("dis", num_classes, default_num_sampled(num_classes)).rank_limit
    cached = cache_teacher_logits(
        teacher,
        splits["train"],
        transform,
        top_r=top_r,
        batch_size=options.batch_size,
        num_views=options.num_views,
        seed=options.seed,
        device="cuda" if torch.cuda.is_available() else "cpu",
        record={"image_size": size[0]},
    )
    cached.save_to_disk(str(output))
    views = "the un-augmented images" if options.num_views is None else f"{options.num_views} augmented views each"
    print(f"saved {len(cached):,} training images with the teacher's top {top_r:,} logits ({views}) to {output}")
    return output


if __name__ == "__main__":
    main()
