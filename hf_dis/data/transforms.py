"""Transforms that match a model: resolution and normalisation from the model's data config, images made RGB (grey
glyphs become 3-channel), and `datasets` batches turned into the `pixel_values` / `labels` the trainer reads.

The data config comes from timm's `pretrained_cfg` (plain timm models and `TimmWrapperForImageClassification`) or
from a transformers image processor (`image_mean`, `image_std`, `size` / `crop_size`); timm's `create_transform`
builds the pipeline, so its options (`hflip`, `scale`, `auto_augment`, ...) pass through. `padded_crop_transform`
is the pad-and-crop augmentation of the CIFAR KD literature and of BoT re-ID.
"""

from __future__ import annotations

import json
import os

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import timm.data
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.io import ImageReadMode
from transformers import TimmWrapperImageProcessor

from hf_dis.data.teacher_cache import (
    CARRIED_CACHE_COLUMNS,
    TAIL_LOGIT,
    TEACHER_EMBEDDINGS,
    TOP_CLASSES,
    TOP_LOGITS,
    VIEW_SEEDS,
    read_cached_views,
)
from hf_dis.models.timm_classifier import timm_module

#: The teacher-cache columns as arrays (class ids as the trainer indexes with them).
_CACHE_DTYPES = {TOP_CLASSES: np.int64, TOP_LOGITS: np.float32, TAIL_LOGIT: np.float32, TEACHER_EMBEDDINGS: np.float32}


def data_config(model: nn.Module | None = None, processor: Any = None, image_size: int | None = None) -> dict[str, Any]:
    """timm-style data config (`input_size`, `mean`, `std`, `interpolation`, `crop_pct`) of `model`, or of an image
    `processor` (which wins when given); `image_size` overrides the resolution (square)."""
    if processor is not None:
        config = _processor_config(processor)
    elif model is not None:
        inner = timm_module(model)
        if not isinstance(getattr(inner, "pretrained_cfg", None), dict):
            raise ValueError(
                f"{type(model).__name__} carries no data config: pass its image processor (processor=...)."
            )
        config = timm.data.resolve_data_config(model=inner)
    else:
        raise ValueError("data_config needs a model or an image processor.")
    if image_size is not None:
        config["input_size"] = (3, image_size, image_size)
        config["crop_pct"] = 1.0  # at a chosen size, take the whole image
    return config


def timm_image_processor(model: nn.Module, processor: Any = None, image_size: int | None = None) -> Any:
    """A `transformers.TimmWrapperImageProcessor` whose evaluation transform is `image_transform(model,
    training=False, processor=processor, image_size=image_size)`'s. Passed as a timm student's `processing_class=`, it
    is saved beside it as `preprocessor_config.json` (which transformers' own class does not write), so that
    `transformers.pipeline("image-classification", model=FOLDER)` and the Hub's widget feed the student as its
    evaluation did, without hf_dis."""
    config = data_config(model, processor, image_size)
    pretrained_cfg = {**config, "input_size": list(config["input_size"]), "mean": list(config["mean"]),
                      "std": list(config["std"])}  # fmt: skip
    return SavedTimmImageProcessor(pretrained_cfg=pretrained_cfg)


class SavedTimmImageProcessor(TimmWrapperImageProcessor):
    """`TimmWrapperImageProcessor` that `save_pretrained` writes (transformers disables it for that class): as the
    `preprocessor_config.json` from which `AutoImageProcessor` builds a plain `TimmWrapperImageProcessor`."""

    def __init__(self, pretrained_cfg: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(pretrained_cfg, **kwargs)
        self.saved_pretrained_cfg = pretrained_cfg

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, "preprocessor_config.json")
        with open(path, "w") as file:
            config = {"image_processor_type": "TimmWrapperImageProcessor", "pretrained_cfg": self.saved_pretrained_cfg}
            json.dump(config, file, indent=2)
        return [path]


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics a model's inputs were normalised with: x = (image - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def model_normalization(model: nn.Module, processor: Any = None) -> Normalization | None:
    """The normalisation a model expects, the one `data_config` gives the transforms (an image processor's when it
    has statistics, else the model's timm data config), read by the teacher's input conversion and the model card;
    None when unknown (a transformers model without its processor)."""
    if getattr(processor, "image_mean", None) is None:
        processor = None  # no image statistics in it (or none given): the model's own config decides
    try:
        config = data_config(model, processor)
    except ValueError:
        return None
    return Normalization(tuple(config["mean"]), tuple(config["std"]))


def _processor_config(processor: Any) -> dict[str, Any]:
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    height = size.get("height") or size.get("shortest_edge") or 224
    width = size.get("width") or size.get("shortest_edge") or height
    return {
        "input_size": (3, height, width),
        "mean": tuple(processor.image_mean),
        "std": tuple(processor.image_std),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }


def image_transform(
    model: nn.Module | None = None,
    *,
    training: bool,
    processor: Any = None,
    image_size: int | None = None,
    **timm_options: Any,
) -> Callable:
    """PIL image -> normalised `[3, H, W]` tensor for `model` (train: timm's augmentation; eval: resize and crop).

    Args:
        model, processor, image_size: as in `data_config`.
        training: augmenting (random resized crop, flip, colour jitter) or not.
        **timm_options: passed to `timm.data.create_transform`, e.g. ``hflip=0.0`` for characters (a mirrored
            glyph is another glyph) or ``scale=(0.8, 1.0)``.
    """
    transform = timm.data.create_transform(
        **data_config(model, processor, image_size), is_training=training, **timm_options
    )
    return lambda image: transform(image.convert("RGB"))


def padded_crop_transform(
    *,
    training: bool,
    image_size: tuple[int, int],
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    hflip: float = 0.5,
    padding: int = 4,
    random_erasing: float = 0.0,
) -> PaddedCropTransform:
    """PIL image -> normalised `[3, H, W]` tensor with the augmentation of the CIFAR KD literature (`padding=4`,
    `random_erasing=0` at 32 x 32) and of BoT re-ID (`padding=10`, `random_erasing=0.5` at 256 x 128).

    Training: resize to `image_size` (height, width), horizontal flip, pad by `padding` and crop back at random,
    normalise, then random erasing (probability `random_erasing`, erased to the mean, i.e. 0 after normalisation).
    Evaluation: resize and normalise. Take `mean` / `std` from the model (`data_config(model)`). For glyphs, pass
    ``hflip=0`` (a mirrored character is another character). The result also transforms a list of images at once
    (`.batch`), which `labelled_batches` uses.
    """
    return PaddedCropTransform(
        training=training,
        image_size=image_size,
        mean=mean,
        std=std,
        hflip=hflip,
        padding=padding,
        random_erasing=random_erasing,
    )


class PaddedCropTransform:
    """`padded_crop_transform`'s transform: `transform(image)` -> `[3, H, W]`, `transform.batch(images)` ->
    `[N, 3, H, W]`.

    It is torchvision's Resize (bicubic), RandomHorizontalFlip, Pad + RandomCrop, ToTensor, Normalize and
    RandomErasing(value=0) with the same random draws in the same order, so it makes the same images for the same
    seed (tested), but crops in NumPy and converts and normalises a whole batch in three tensor operations: the
    per-image torchvision modules cost several times the PNG decoding of a small image (`benchmarks/bench_loader.py`),
    and on a GPU a small-image study's speed can be its data loaders'.
    """

    def __init__(
        self,
        *,
        training: bool,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        hflip: float,
        padding: int,
        random_erasing: float,
    ) -> None:
        if padding < 0 or not 0 <= hflip <= 1 or not 0 <= random_erasing <= 1:
            raise ValueError(
                f"padding must be >= 0, hflip and random_erasing in [0, 1], got {padding}, {hflip}, {random_erasing}."
            )
        self.training = training
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.hflip = hflip
        self.padding = padding
        self.random_erasing = random_erasing

    def __repr__(self) -> str:
        return (
            f"PaddedCropTransform(training={self.training}, image_size={(self.height, self.width)}, "
            f"hflip={self.hflip}, padding={self.padding}, random_erasing={self.random_erasing})"
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.batch([image])[0]

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """`[N, 3, H, W]` float32, each image drawn in turn as `__call__` would draw it."""
        if not images:
            return torch.empty(0, 3, self.height, self.width)
        arrays = np.stack([self._resized(image) for image in images])  # [N, H, W, 3] uint8
        erasures = []
        if self.training:
            draws = [self._draw() for _ in images]
            arrays = self._flip_and_crop(arrays, draws)
            erasures = [erasure for *_, erasure in draws]
        pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous().float().div_(255)
        pixels = pixels.sub_(self.mean).div_(self.std)
        for row, erasure in enumerate(erasures):
            if erasure is not None:
                top, left, height, width = erasure
                pixels[row, :, top : top + height, left : left + width] = 0.0
        return pixels

    def _resized(self, image: Image.Image | dict[str, Any]) -> np.ndarray:
        if isinstance(image, dict):  # undecoded, as `labelled_dataset` reads it for this transform
            pixels = decoded_png(image)
            if pixels is not None and pixels.shape[:2] == (self.height, self.width):
                return pixels
            image = Image.fromarray(pixels) if pixels is not None else datasets.Image().decode_example(image)
        image = image.convert("RGB")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.BICUBIC)
        return np.asarray(image)

    def _draw(self) -> tuple[bool, int, int, tuple[int, int, int, int] | None]:
        """One image's random draws in torchvision's order: flip, crop row, crop column, erasing."""
        flip = bool(torch.rand(1) < self.hflip)  # drawn even when hflip = 0, as RandomHorizontalFlip(0) does
        top = left = 0
        if self.padding:  # RandomCrop.get_params on the padded image
            top = int(torch.randint(0, 2 * self.padding + 1, size=(1,)))
            left = int(torch.randint(0, 2 * self.padding + 1, size=(1,)))
        return flip, top, left, self._erasure()

    def _flip_and_crop(self, arrays: np.ndarray, draws: list[tuple]) -> np.ndarray:
        """Each image flipped, padded and cropped as drawn (one padding for the batch; cropping the padded image at
        column 2 x padding - left and then flipping is the same as flipping first and cropping at left)."""
        pad = self.padding
        padded = np.pad(arrays, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else arrays
        out = np.empty_like(arrays)
        for row, (flip, top, left, _) in enumerate(draws):
            left = 2 * pad - left if flip else left
            crop = padded[row, top : top + self.height, left : left + self.width]
            out[row] = crop[:, ::-1] if flip else crop
        return out

    def _erasure(self) -> tuple[int, int, int, int] | None:
        """RandomErasing's draws: None, or the erased box (top, left, height, width)."""
        if self.random_erasing == 0 or not torch.rand(1) < self.random_erasing:
            return None
        shape = torch.empty(3, self.height, self.width)
        top, left, height, width, value = transforms.RandomErasing.get_params(
            shape, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0.0]
        )
        return None if value is shape else (top, left, height, width)  # no box found in 10 tries: no erasing


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decoded_png(image: dict[str, Any]) -> np.ndarray | None:
    """`[H, W, 3]` uint8 RGB of an undecoded `datasets.Image` value (`{"bytes", "path"}`) holding an 8-bit PNG,
    decoded by libpng through torchvision (a third of PIL's time for a 32 px glyph; the same pixels, as PNG is
    lossless and grey or palette images expand to RGB alike); None for anything else, and for a PNG with an EXIF
    chunk (whose orientation `datasets` applies): `datasets` decodes those, as it would have."""
    data = image.get("bytes")
    if data is None and image.get("path"):
        with open(image["path"], "rb") as file:
            data = file.read()
    if data is None or data[:8] != _PNG_SIGNATURE or data[24] != 8 or b"eXIf" in data:  # IHDR bit depth 8
        return None
    pixels = torchvision.io.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    return pixels.permute(1, 2, 0).numpy()


def transform_images(transform: Callable, images: Sequence[Any]) -> torch.Tensor | list[torch.Tensor]:
    """`transform` applied to each image: one `[N, ...]` tensor from a transform with a `batch` method (as
    `padded_crop_transform`'s), else a list of its results."""
    batch = getattr(transform, "batch", None)
    return batch(images) if batch is not None else [transform(image) for image in images]


def labelled_batches(
    transform: Callable, image_column: str = "image", label_column: str | None = "label"
) -> Callable[[dict[str, list]], dict[str, list]]:
    """A function for `Dataset.with_transform`: a batch of rows -> `pixel_values` (and `labels` when the dataset
    has `label_column`, and the teacher-cache columns when it has them: see `cache_teacher_logits`; from a cache with
    augmented views, one view per example, its image remade by `transform` with the view's seed)."""

    def apply(batch: dict[str, list]) -> dict[str, list]:
        if VIEW_SEEDS in batch:
            out = read_cached_views(batch, transform, image_column)
        else:
            out = {"pixel_values": transform_images(transform, batch[image_column])}
            # as arrays: the collator then stacks them at once, instead of building a tensor from B x R numbers
            out.update(
                {key: np.asarray(batch[key], _CACHE_DTYPES[key]) for key in CARRIED_CACHE_COLUMNS if key in batch}
            )
        if label_column is not None and label_column in batch:
            out["labels"] = batch[label_column]
        return out

    return apply


#: The column `labelled_dataset` adds to a dataset with a teacher cache: each row's position in that dataset, where
#: its cache columns are read from.
CACHE_ROW = "teacher_cache_row"


def labelled_dataset(
    dataset: datasets.Dataset, transform: Callable, image_column: str = "image", label_column: str | None = "label"
) -> datasets.Dataset:
    """`dataset.with_transform(labelled_batches(transform, ...))`, with a one-view teacher cache's columns read as
    arrays from the dataset's arrow table.

    A `with_transform` function receives its batch as Python objects: B x R numbers per cache column, which cost more
    to build than the images they come with. Here the cache columns are left out of that batch; each row carries its
    position (`teacher_cache_row`) and the batch's cache rows are taken from the arrow table at once, as NumPy arrays.
    The batches hold the same values as `labelled_batches` gives. For a `padded_crop_transform`, the images are read
    undecoded and PNGs decoded by `decoded_png` (the same pixels, faster). A dataset without a teacher cache, or with
    augmented views (whose images are remade per view), is transformed by `labelled_batches` as it is. Select or
    shuffle the result freely: each row keeps its position in the cache it was made from. Pass the dataset before
    any `select` or `shuffle`: on one with an indices mapping, adding the position column first writes the selected
    rows out as a new table.
    """
    cached = [key for key in CARRIED_CACHE_COLUMNS if key in dataset.column_names]
    read = labelled_batches(transform, image_column, label_column)
    feature = dataset.features.get(image_column)
    if isinstance(transform, PaddedCropTransform) and isinstance(feature, datasets.Image) and feature.decode:
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # it decodes PNG bytes faster
    if not cached or VIEW_SEEDS in dataset.column_names:
        return dataset.with_transform(read)
    cache = dataset.select_columns(cached).with_format("arrow")
    rows = dataset.add_column(CACHE_ROW, np.arange(len(dataset), dtype=np.int64))

    def apply(batch: dict[str, list]) -> dict[str, Any]:
        out = read(batch)
        out.update(_cache_arrays(cache[batch[CACHE_ROW]]))
        return out

    return rows.with_transform(apply, columns=[name for name in rows.column_names if name not in cached])


def _cache_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """A table of one-view cache rows as arrays in `_CACHE_DTYPES`: `[B, R]` (or `[B, width]`) from a fixed-size
    list column, `[B]` from a scalar one."""
    arrays = {}
    for key in table.column_names:
        column = table.column(key).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            array = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size)
        else:
            array = column.to_numpy(zero_copy_only=False)
        arrays[key] = array.astype(_CACHE_DTYPES[key], copy=False)
    return arrays
