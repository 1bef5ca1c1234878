"""The data options every recipe shares (`DataArguments`) and the splits they describe, already transformed for a
model: classification (CIFAR-100 or glyphs) and re-ID (Market-1501 or glyphs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_dis.data import (
    FACE_SETS,
    TEACHER_CACHE_COLUMNS,
    labelled_batches,
    labelled_dataset,
    load_cifar100,
    load_glyphs,
    load_image_dataset,
    load_market1501,
    padded_crop_transform,
    reid_eval_batches,
    reid_eval_dataset,
    teacher_cache_info,
)

CLASSIFICATION_DATASETS = ("cifar100", "glyphs")
REID_DATASETS = ("market1501", "glyphs")
#: The options that choose how glyphs are rendered: a saved task (`data_dir`) has them fixed already.
GLYPH_RENDERING = (
    "glyph_classes", "glyph_image_size", "glyph_system_fonts", "glyph_charset", "glyph_families", "glyph_faces",
    "glyph_min_faces", "glyph_copies", "glyph_split", "glyph_max_train_families"
)  # fmt: skip


@dataclass
class DataArguments:
    """Where the data comes from.

    Args:
        dataset: cifar100 or glyphs (classification); market1501 or glyphs (re-ID). glyphs renders characters from
            this machine's fonts: no download, runs anywhere. Classification also takes your own dataset: an image
            folder (one sub-folder per class), a dataset saved with save_to_disk, or a Hub id (columns image and
            label).
        data_dir: Local copy of the dataset: CIFAR-100 (cifar-100-python, a parquet copy or an image folder; unset
            downloads from the Hub), the Market-1501 release folder (required), or a glyph task saved by `hf-dis
            render-glyphs` (for a machine without the fonts; unset renders here).
        glyph_classes: glyphs: number of characters (classification) or identities (re-ID); unset uses all that
            qualify.
        glyph_image_size: glyphs: side of the rendered images.
        glyph_system_fonts: glyphs: use the system's fonts besides matplotlib's (more classes, machine-dependent).
        glyph_charset: glyphs: restrict to a character set (gb2312-level1, gb2312).
        glyph_families: glyphs: render with the faces of these font families only (names without style words, e.g.
            "TW Kai"); unset uses every face found.
        glyph_faces: glyphs: render with these faces only (e.g. "Noto Sans CJK SC"), or a named set of them (cjk-20k:
            16 CJK families, one face each, 20,902 ideographs drawn by 10 or more); unset uses every face found.
        glyph_min_faces: glyphs: a character is a class when at least this many faces draw it.
        glyph_copies: glyphs: renderings per character and face.
        glyph_split: glyphs: families (the same font families held out for every class), per_class (one family
            held out per class: a character drawn by 2 families is a class; used with --glyph_faces cjk-100k) or
            per_class_seen (per_class's classes and families, each test image a new rendering in a trained family).
        glyph_max_train_families: glyphs, per-class splits: train on at most this many (other) families per class.
        eval_subset: classification: evaluate during training on this many test images (a fixed subset, seeded);
            the final evaluation uses the whole test split. Unset: the whole split every time.
    """

    dataset: str = field(
        default="glyphs",
        metadata={
            "help": "cifar100 or glyphs (classification); market1501 or glyphs (re-ID). glyphs renders characters "
            "from this machine's fonts: no download, runs anywhere. Classification also takes your own dataset: an "
            "image folder (one sub-folder per class), a dataset saved with save_to_disk, or a Hub id (columns image "
            "and label)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local copy of the dataset: CIFAR-100 (cifar-100-python, a parquet copy or an image folder; unset "
            "downloads from the Hub), the Market-1501 release folder (required), or a glyph task saved by `hf-dis "
            "render-glyphs` (for a machine without the fonts; unset renders here)."
        },
    )
    glyph_classes: int | None = field(
        default=None,
        metadata={
            "help": "glyphs: number of characters (classification) or identities (re-ID); unset uses all that qualify."
        },
    )
    glyph_image_size: int = field(default=32, metadata={"help": "glyphs: side of the rendered images."})
    glyph_system_fonts: bool = field(
        default=False,
        metadata={"help": "glyphs: use the system's fonts besides matplotlib's (more classes, machine-dependent)."},
    )
    glyph_charset: str | None = field(
        default=None, metadata={"help": "glyphs: restrict to a character set (gb2312-level1, gb2312)."}
    )
    glyph_families: list[str] | None = field(
        default=None,
        metadata={
            "help": "glyphs: render with the faces of these font families only (names without style words, e.g. "
            '"TW Kai"); unset uses every face found.'
        },
    )
    glyph_faces: list[str] | None = field(
        default=None,
        metadata={
            "help": 'glyphs: render with these faces only (e.g. "Noto Sans CJK SC"), or a named set of them (cjk-20k: '
            "16 CJK families, one face each, 20,902 ideographs drawn by 10 or more); unset uses every face found."
        },
    )
    glyph_min_faces: int = field(
        default=5, metadata={"help": "glyphs: a character is a class when at least this many faces draw it."}
    )
    glyph_copies: int = field(default=2, metadata={"help": "glyphs: renderings per character and face."})
    glyph_split: str = field(
        default="families",
        metadata={
            "help": "glyphs: families (the same font families held out for every class), per_class (one family held "
            "out per class: a character drawn by 2 families is a class; used with --glyph_faces cjk-100k) or "
            "per_class_seen (per_class's classes and families, each test image a new rendering in a trained family)."
        },
    )
    glyph_max_train_families: int | None = field(
        default=None,
        metadata={"help": "glyphs, per-class splits: train on at most this many (other) families per class."},
    )
    eval_subset: int | None = field(
        default=None,
        metadata={
            "help": "classification: evaluate during training on this many test images (a fixed subset, seeded); "
            "the final evaluation uses the whole test split. Unset: the whole split every time."
        },
    )

    def is_generic(self, task: str) -> bool:
        """A classification dataset named by folder or Hub id (`load_image_dataset`), not one of the named ones."""
        return task == "classification" and self.dataset not in (*CLASSIFICATION_DATASETS, *REID_DATASETS)

    def check(self, task: str) -> None:
        names = CLASSIFICATION_DATASETS if task == "classification" else REID_DATASETS
        if self.is_generic(task) and self.data_dir is not None:
            raise ValueError(f"--data_dir is for {list(names)}; name your own dataset with --dataset FOLDER_OR_HUB_ID.")
        if self.dataset not in names and not self.is_generic(task):
            raise ValueError(f"dataset must be one of {list(names)} for {task}, got {self.dataset!r}.")
        if self.dataset == "market1501" and self.data_dir is None:
            raise ValueError(
                "Market-1501 is read from a local copy: pass --data_dir (the Market-1501-v15.09.15 folder or its "
                "parent). It cannot be downloaded by this library."
            )
        if self.dataset == "glyphs" and self.data_dir is not None:
            defaults = {option.name: option.default for option in fields(self)}
            given = sorted(name for name in GLYPH_RENDERING if getattr(self, name) != defaults[name])
            if given:
                raise ValueError(
                    f"{given} choose how glyphs are rendered, but --data_dir {self.data_dir} holds a task already "
                    "rendered: drop them (the saved task fixes its characters and fonts)."
                )

    def name(self, task: str) -> str:
        """The dataset as a model card names it: a Hub id when it came from the Hub."""
        if self.is_generic(task):
            return self.dataset if not Path(self.dataset).exists() else Path(self.dataset).name
        if self.dataset == "cifar100":
            return "uoft-cs/cifar100" if self.data_dir is None else "CIFAR-100"
        if self.dataset == "market1501":
            return "Market-1501"
        if self.data_dir is not None:
            return f"hf_dis glyphs ({task}, saved task {Path(self.data_dir).name})"
        return f"hf_dis glyphs ({task}, {self.glyph_classes or 'all'} characters)"

    def glyphs(self, protocol: str) -> datasets.DatasetDict:
        """The glyph task: loaded from `data_dir` (a task `hf-dis render-glyphs` saved), else rendered here."""
        if self.data_dir is not None:
            return load_saved_glyphs(self.data_dir, protocol)
        return load_glyphs(
            self.glyph_classes,
            protocol=protocol,
            charset=self.glyph_charset,
            image_size=self.glyph_image_size,
            include_system_fonts=self.glyph_system_fonts,
            families=self.glyph_families,
            faces=_face_selection(self.glyph_faces),
            min_faces=self.glyph_min_faces,
            copies=self.glyph_copies,
            split=self.glyph_split,
            max_train_families=self.glyph_max_train_families,
        )


def _face_selection(names: list[str] | None) -> list[str] | str | None:
    """`--glyph_faces`: one name that is a face set's stands for the set."""
    if names is not None and len(names) == 1 and names[0] in FACE_SETS:
        return names[0]
    return names


GLYPH_SPLITS = {"classification": ("train", "test"), "reid": ("train", "query", "gallery")}


def load_saved_glyphs(path: str, protocol: str) -> datasets.DatasetDict:
    """A glyph task saved with `DatasetDict.save_to_disk` (by `hf-dis render-glyphs`), checked to be a `protocol`
    task."""
    if not (Path(path) / "dataset_dict.json").is_file():
        raise ValueError(
            f"{path} is not a saved glyph task (no dataset_dict.json): write one with `hf-dis render-glyphs "
            f"--task {protocol} --output_dir {path}` on a machine with the fonts."
        )
    task = datasets.load_from_disk(path)
    if tuple(sorted(task)) != tuple(sorted(GLYPH_SPLITS[protocol])):
        raise ValueError(
            f"{path} holds the splits {sorted(task)}; a {protocol} task has {list(GLYPH_SPLITS[protocol])}: render it "
            f"with --task {protocol}."
        )
    return task


def load_splits(data: DataArguments, task: str) -> datasets.DatasetDict:
    """The raw splits: train / test (classification) or train / query / gallery (re-ID)."""
    data.check(task)
    if data.is_generic(task):
        splits = load_image_dataset(data.dataset)
        missing = sorted({"image", "label"} - set(splits["train"].column_names))
        if missing:
            raise ValueError(
                f"{data.dataset} has the columns {splits['train'].column_names}; the recipes read 'image' and 'label' "
                f"(missing: {missing}): rename them (dataset.rename_column) and save_to_disk, or use "
                "examples/distil_timm.py, which takes --image_column and --label_column."
            )
        return splits
    if task == "classification":
        return load_cifar100(data.data_dir) if data.dataset == "cifar100" else data.glyphs("classification")
    return load_market1501(data.data_dir) if data.dataset == "market1501" else data.glyphs("reid")


def num_labels(splits: datasets.DatasetDict) -> int:
    """Classes (classification) or training identities (re-ID, relabelled 0..n-1) of the train split."""
    label = splits["train"].features["label"]
    return label.num_classes if isinstance(label, datasets.ClassLabel) else len(set(splits["train"]["label"]))


def classification_transforms(
    data: DataArguments, normalisation: dict[str, Any], image_size: tuple[int, int], *, training: bool
) -> Callable:
    """The classification recipes' image transform: pad-and-crop + flip for training (no flip for glyphs), resize
    for evaluation, normalised with `normalisation` (a data config's `mean` and `std`)."""
    options = dict(image_size=image_size, mean=normalisation["mean"], std=normalisation["std"])
    if not training:
        return padded_crop_transform(training=False, **options)
    hflip = 0.5 if data.dataset == "cifar100" else 0.0  # a mirrored character is another character
    return padded_crop_transform(training=True, hflip=hflip, padding=max(image_size) // 8, **options)


def classification_splits(
    splits: datasets.DatasetDict, data: DataArguments, normalisation: dict[str, Any], image_size: tuple[int, int]
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) transformed by `classification_transforms`."""
    train_transform = classification_transforms(data, normalisation, image_size, training=True)
    train = labelled_dataset(splits["train"], train_transform)
    return train, evaluation_view(splits["test"], data, normalisation, image_size)


def evaluation_view(
    split: datasets.Dataset, data: DataArguments, normalisation: dict[str, Any], image_size: tuple[int, int]
) -> datasets.Dataset:
    """`split` with the evaluation transform of `classification_transforms` (items: `pixel_values`, `labels`)."""
    return split.with_transform(labelled_batches(classification_transforms(data, normalisation, image_size,
                                                                            training=False)))  # fmt: skip


def evaluation_sets(test: datasets.Dataset, data: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(the evaluation set during training, the final one): `data.eval_subset` test images (a seeded subset) and the
    whole test split, or the whole split twice."""
    if data.eval_subset is None or data.eval_subset >= len(test):
        return test, test
    if data.eval_subset < 1:
        raise ValueError(f"eval_subset must be >= 1 (or unset for the whole test split), got {data.eval_subset}.")
    rows = np.random.default_rng(0).choice(len(test), data.eval_subset, replace=False)
    return test.select(np.sort(rows)), test


def reid_transforms(
    data: DataArguments, normalisation: dict[str, Any], image_size: tuple[int, int], *, training: bool
) -> Callable:
    """The re-ID recipes' image transform, BoT style: flip (not for glyphs), pad by 10 pixels at 256 x 128 and crop,
    random erasing for training; resize for evaluation; normalised with `normalisation`."""
    options = dict(image_size=image_size, mean=normalisation["mean"], std=normalisation["std"])
    if not training:
        return padded_crop_transform(training=False, **options)
    hflip = 0.5 if data.dataset == "market1501" else 0.0
    return padded_crop_transform(
        training=True, hflip=hflip, padding=max(image_size) // 25, random_erasing=0.5, **options
    )


def reid_splits(
    splits: datasets.DatasetDict, data: DataArguments, normalisation: dict[str, Any], image_size: tuple[int, int]
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, query + gallery evaluation set) transformed by `reid_transforms`."""
    train_transform = reid_transforms(data, normalisation, image_size, training=True)
    train = labelled_dataset(splits["train"], train_transform)
    evaluation = reid_eval_dataset(splits["query"], splits["gallery"]).with_transform(
        reid_eval_batches(reid_transforms(data, normalisation, image_size, training=False))
    )
    return train, evaluation


@dataclass
class TeacherCacheOption:
    """The distillation recipes' teacher cache.

    Args:
        teacher_cache: A training set saved by `hf-dis cache-teacher` (--task reid for re-ID): distil from its cached
            teacher logits instead of running the teacher (then --teacher_model is optional).
    """

    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "A training set saved by `hf-dis cache-teacher` (--task reid for re-ID): distil from its cached "
            "teacher logits instead of running the teacher (then --teacher_model is optional)."
        },
    )


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
