"""`ShapeCheckedCollator`: a data collator whose failure to stack a batch names the key, the examples and their
shapes (a grey or odd-sized image among RGB ones), instead of torch's bare "stack expects each tensor to be equal
size"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class ShapeCheckedCollator:
    """Wraps `collate` (picklable, for loader workers); on a failure, the first key whose tensors differ in shape is
    named with the first two shapes and the examples' labels, and what usually fixes it."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.collate = collate

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        try:
            return self.collate(features)
        except (RuntimeError, ValueError) as error:
            problem = _first_shape_mismatch(features)
            if problem is None:
                raise
            raise ValueError(f"{problem} ({type(error).__name__}: {error})") from error


def _first_shape_mismatch(features: list[dict[str, Any]]) -> str | None:
    if not features or not isinstance(features[0], dict):
        return None
    for key in features[0]:
        shapes = [tuple(item[key].shape) if isinstance(item.get(key), torch.Tensor) else None for item in features]
        first = shapes[0]
        different = next((index for index, shape in enumerate(shapes) if shape != first), None)
        if first is None or different is None:
            continue
        labels = [item.get("labels", item.get("label")) for item in (features[0], features[different])]
        labels = [int(label) if isinstance(label, (int, torch.Tensor)) else label for label in labels]
        return (
            f"a batch's {key!r} differ in shape: example {different} of the batch (label {labels[1]}) is "
            f"{list(shapes[different])} where example 0 (label {labels[0]}) is {list(first)}. A grey or RGBA image "
            "among RGB ones, or images of other sizes: convert each image to RGB (image.convert('RGB')) and resize "
            "to one size in the transform."
        )
    return None
