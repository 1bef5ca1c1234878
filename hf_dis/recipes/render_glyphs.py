r"""Render a glyph task once and save it, so that it can be used where the fonts are not: a GPU machine without them,
a cluster node. The recipes read it back with `--dataset glyphs --data_dir FOLDER`.

    hf-dis render-glyphs --task classification --glyph_charset gb2312-level1 --glyph_system_fonts true \
        --output_dir glyph_tasks/gb2312-classification
    hf-dis train-teacher --dataset glyphs --data_dir glyph_tasks/gb2312-classification --model resnet18 ...

The folder is a `DatasetDict.save_to_disk` copy (train / test, or train / query / gallery): grey PNG images with their
labels (and font / camera columns), a few MB for thousands of classes at 32 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_dis.recipes.data import GLYPH_SPLITS, DataArguments
from hf_dis.recipes.parsing import parse_recipe_args


@dataclass
class RenderArguments:
    """What to render and where to save it.

    Args:
        task: classification (train / test split by font) or reid (train / query / gallery, fonts as cameras).
        output_dir: The folder to save the task to (created; must not hold a task already).
    """

    task: str = field(
        default="classification",
        metadata={
            "help": "classification (train / test split by font) or reid (train / query / gallery, fonts as cameras)."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "The folder to save the task to (created; must not hold a task already)."}
    )

    def __post_init__(self) -> None:
        if self.task not in GLYPH_SPLITS:
            raise ValueError(f"task must be one of {list(GLYPH_SPLITS)}, got {self.task!r}.")
        if not self.output_dir:
            raise ValueError("--output_dir is required: the folder to save the rendered task to.")


def parse_args(argv: Sequence[str] | None = None) -> tuple[DataArguments, RenderArguments]:
    """The command's options from `argv` (default: the command line): flags or one YAML / JSON file."""
    return parse_recipe_args((DataArguments,), RenderArguments, argv, __doc__)


def main(argv: Sequence[str] | None = None) -> Path:
    """Render and save; returns the folder."""
    data, options = parse_args(argv)
    if data.dataset != "glyphs" or data.data_dir is not None:
        raise ValueError("render-glyphs renders --dataset glyphs from this machine's fonts (without --data_dir).")
    output = Path(options.output_dir)
    if (output / "dataset_dict.json").is_file():
        raise ValueError(f"{output} already holds a saved task; choose another --output_dir or remove it.")
    data.check(options.task)
    task = data.glyphs(options.task)
    task.save_to_disk(str(output))
    sizes = ", ".join(f"{split} {len(task[split]):,}" for split in task)
    classes = len(set(task["train"]["label"]))
    print(f"saved a {options.task} glyph task to {output}: {classes:,} training classes; {sizes} images")
    return output


if __name__ == "__main__":
    main()
