"""Transforms that match a model: resolution and normalisation from the model's data config, images made RGB (grey
glyphs become 3-channel), and `datasets` batches turned into the `pixel_values` / `labels` the trainer reads.

The data config comes from timm's `pretrained_cfg` (plain timm models and `TimmWrapperForImageClassification`) or
from a transformers image processor (`image_mean`, `image_std`, `size` / `crop_size`); timm's `create_transform`
builds the pipeline, so its options (`hflip`, `scale`, `auto_augment`, ...) pass through. `padded_crop_transform`
is the pad-and-crop augmentation of the CIFAR KD literature and of BoT re-ID.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import timm.data
from torch import nn
from torchvision import transforms
from transformers import TimmWrapperForImageClassification

from hf_dis.data.teacher_cache import TEACHER_CACHE_COLUMNS, VIEW_SEEDS, read_cached_views


def data_config(model: nn.Module | None = None, processor: Any = None, image_size: int | None = None) -> dict[str, Any]:
    """timm-style data config (`input_size`, `mean`, `std`, `interpolation`, `crop_pct`) of `model`, or of an image
    `processor` (which wins when given); `image_size` overrides the resolution (square)."""
    if processor is not None:
        config = _processor_config(processor)
    elif model is not None:
        inner = model.timm_model if isinstance(model, TimmWrapperForImageClassification) else model
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
) -> Callable:
    """PIL image -> normalised `[3, H, W]` tensor with the augmentation of the CIFAR KD literature (`padding=4`,
    `random_erasing=0` at 32 x 32) and of BoT re-ID (`padding=10`, `random_erasing=0.5` at 256 x 128).

    Training: resize to `image_size` (height, width), horizontal flip, pad by `padding` and crop back at random,
    normalise, then random erasing (probability `random_erasing`, erased to the mean, i.e. 0 after normalisation).
    Evaluation: resize and normalise. Take `mean` / `std` from the model (`data_config(model)`). For glyphs, pass
    ``hflip=0`` (a mirrored character is another character).
    """
    resize = transforms.Resize(tuple(image_size), interpolation=transforms.InterpolationMode.BICUBIC)
    finish = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if training:
        steps = [resize, transforms.RandomHorizontalFlip(hflip)]
        if padding > 0:
            steps += [transforms.Pad(padding), transforms.RandomCrop(tuple(image_size))]
        steps += finish
        if random_erasing > 0:
            steps.append(transforms.RandomErasing(p=random_erasing, value=0))
    else:
        steps = [resize, *finish]
    pipeline = transforms.Compose(steps)
    return lambda image: pipeline(image.convert("RGB"))


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
            out = {"pixel_values": [transform(image) for image in batch[image_column]]}
            out.update({key: batch[key] for key in TEACHER_CACHE_COLUMNS if key in batch})
        if label_column is not None and label_column in batch:
            out["labels"] = batch[label_column]
        return out

    return apply
