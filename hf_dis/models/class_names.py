"""Which class each output of a classifier is: names read from a model (a transformers config's `id2label`, a timm
model's `pretrained_cfg["label_names"]`) or from a `datasets` label column (`ClassLabel`), checked to agree, and
written into a student that has none.

Distillation matches outputs by position: a teacher whose class 3 is the data's class 7 teaches the wrong class at
every output, and nothing in the losses can tell. Where two sources name their classes, they must name the same
classes in the same order (compared without case or surrounding spaces); names that carry no information
(transformers' default `LABEL_i`, or the index itself) count as no names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from torch import nn
from transformers import PreTrainedModel

_PLACEHOLDER = re.compile(r"(LABEL_)?(\d+)")


def model_class_names(model: nn.Module, num_classes: int | None = None) -> list[str] | None:
    """The names of `model`'s outputs, in order, or None when it has none (or only placeholders), or when they are
    not `num_classes` many (given, or a timm model's own): those of a head that a new one replaced."""
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None) if isinstance(model, PreTrainedModel) else None
    if id2label:
        names = [id2label.get(index, id2label.get(str(index))) for index in range(len(id2label))]
        names = None if any(name is None for name in names) else names
    else:
        names = getattr(model, "pretrained_cfg", {}).get("label_names") or None
        num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if names is None or (num_classes is not None and len(names) != num_classes):
        return None
    return _informative([str(name) for name in names])


def dataset_class_names(dataset: Any, columns: Sequence[str]) -> list[str] | None:
    """The `ClassLabel` names of the first of `columns` a `datasets.Dataset` has; None for other datasets, a
    column that is not a `ClassLabel`, or names that are only placeholders (see `class_label_names`)."""
    names = class_label_names(dataset, columns)
    return None if names is None else _informative(names)


def class_label_names(dataset: Any, columns: Sequence[str]) -> list[str] | None:
    """The `ClassLabel` names of the first of `columns` a `datasets.Dataset` has, as they are: an image folder of
    digits names its classes "0" to "9", which say nothing to compare by but are still what a user's
    `pipeline("image-classification")` should answer."""
    features = getattr(dataset, "features", None) if isinstance(dataset, datasets.Dataset) else None
    column = next((name for name in columns if features is not None and name in features), None)
    if column is None or not isinstance(features[column], datasets.ClassLabel):
        return None
    return list(features[column].names)


def agreed_class_names(named: Mapping[str, list[str] | None]) -> list[str] | None:
    """The class names of the sources that have some (`{what: names or None}`), when they agree; None when none
    has names.

    Raises:
        ValueError: two sources disagree; the message names the first class where they do, says whether it is the
            same classes in another order, and how to fix it.
    """
    known = [(what, names) for what, names in named.items() if names is not None]
    for (first, first_names), (other, other_names) in zip(known, known[1:], strict=False):
        keys = [_key(name) for name in first_names], [_key(name) for name in other_names]
        if keys[0] == keys[1]:
            continue
        if len(keys[0]) != len(keys[1]):
            raise ValueError(f"the {first} names {len(keys[0])} classes and the {other} {len(keys[1])}.")
        index = next(i for i, (a, b) in enumerate(zip(*keys, strict=True)) if a != b)
        where = f"class {index} is {first_names[index]!r} for the {first} and {other_names[index]!r} for the {other}"
        if sorted(keys[0]) == sorted(keys[1]):
            raise ValueError(
                f"the {first} and the {other} have the same classes in a different order ({where}): distillation "
                "matches outputs by position, so every output would learn the wrong class. Put the data's labels in "
                "the teacher's order (datasets: dataset.align_labels_with_mapping(teacher.config.label2id, "
                "'label')), or train the models on the same order."
            )
        differing = sum(a != b for a, b in zip(*keys, strict=True))
        shared = len(set(keys[0]) & set(keys[1]))
        if shared:  # some names in common: two different tasks, not one task under other names
            hint = (
                f"{shared} of the {len(keys[0])} names are in both, so these are two different tasks: train and "
                "distil on the same data (a glyph task is the same task only with the same fonts and options, e.g. "
                "--glyph_system_fonts and --glyph_classes, or load_glyphs(include_system_fonts=...))."
            )
        else:
            hint = "If they are the same classes under other names, give the models the data's names (config.id2label)."
        raise ValueError(
            f"the {first} and the {other} name different classes ({where}; {differing} of {len(keys[0])} differ): "
            f"they must predict the same classes in the same order. {hint}"
        )
    return known[0][1] if known else None


def set_class_names(model: nn.Module, names: Sequence[str]) -> bool:
    """Give a transformers classifier these class names (`id2label`, `label2id`) when it has none of that number
    (none, placeholders, or a replaced head's); True if it did. Saved with the model, they are what
    `pipeline("image-classification")` and the Hub's widget show."""
    if not isinstance(model, PreTrainedModel) or model_class_names(model, len(names)) is not None:
        return False
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: index for index, name in enumerate(names)}
    return True


def _informative(names: list[str]) -> list[str] | None:
    """None when every name is a placeholder: `LABEL_i` or `i` at index i."""
    placeholders = (_PLACEHOLDER.fullmatch(name) for name in names)
    if all(match is not None and int(match.group(2)) == index for index, match in enumerate(placeholders)):
        return None
    return names


def _key(name: str) -> str:
    return name.strip().casefold()
