"""Building the recipes' models from a name: a timm architecture, or a transformers model (local directory or Hub id);
and the input normalisation a model expects."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import timm
import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from hf_dis.data import data_config
from hf_dis.models import ReIDModel, timm_classifier
from hf_dis.recipes.data import DataArguments

Model = TypeVar("Model", bound=nn.Module)


@dataclass
class ModelOptions:
    """Initialisation and input size of the trained model, with defaults that depend on the dataset.

    Args:
        pretrained: Start from the model's pretrained weights (downloaded from the Hub for a timm name) instead of a
            random initialisation. Unset: yes for Market-1501 (as BoT), no otherwise.
        image_size: Input side (classification, square) or height (re-ID, width = height / 2). Unset: 256 for
            Market-1501, 32 otherwise.
    """

    pretrained: bool | None = field(
        default=None,
        metadata={
            "help": "Start from the model's pretrained weights (downloaded from the Hub for a timm name) instead of a "
            "random initialisation. Unset: yes for Market-1501 (as BoT), no otherwise."
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input side (classification, square) or height (re-ID, width = height / 2). Unset: 256 for "
            "Market-1501, 32 otherwise."
        },
    )

    def use_pretrained(self, data: DataArguments) -> bool:
        return self.pretrained if self.pretrained is not None else data.dataset == "market1501"

    def input_size(self, data: DataArguments, task: str) -> tuple[int, int]:
        """(height, width)."""
        size = self.image_size or (256 if data.dataset == "market1501" else 32)
        return (size, size // 2) if task == "reid" else (size, size)


def build_classifier(name: str, num_classes: int, *, pretrained: bool, seed: int) -> nn.Module:
    """A classifier with `num_classes` outputs: a timm architecture (in transformers' TimmWrapper), or a transformers
    model from a directory / Hub id (with `pretrained`, its weights and a new head when the number of classes
    differs; else its architecture, freshly initialised)."""
    if timm.is_model(name) and not os.path.isdir(name):
        return _pretrained_or_explain(name, pretrained, lambda: timm_classifier(name, num_classes, seed, pretrained))
    if pretrained:
        return _pretrained_or_explain(
            name,
            True,
            lambda: AutoModelForImageClassification.from_pretrained(
                name, num_labels=num_classes, ignore_mismatched_sizes=True
            ),
        )
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(name, num_labels=num_classes))


@dataclass
class ReIDBackboneOptions:
    """The re-ID backbone's BoT option.

    Args:
        last_stride: 1: BoT's last stride 1 (the last stage of a timm ResNet-family backbone does not downsample: a
            final feature map twice as high and wide); 2: the backbone's own. Unset: 1 for Market-1501 with a timm
            ResNet-family backbone (as BoT), 2 otherwise.
    """

    last_stride: int | None = field(
        default=None,
        metadata={
            "help": "1: BoT's last stride 1 (the last stage of a timm ResNet-family backbone does not downsample: a "
            "final feature map twice as high and wide); 2: the backbone's own. Unset: 1 for Market-1501 with a timm "
            "ResNet-family backbone (as BoT), 2 otherwise."
        },
    )

    def __post_init__(self) -> None:
        if self.last_stride not in (None, 1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}.")

    def reid_last_stride(self, data: DataArguments, backbone: str) -> int | None:
        """`ReIDModel`'s `last_stride` for `backbone`: 1, or None for the backbone's own."""
        if self.last_stride is not None:
            return 1 if self.last_stride == 1 else None
        timm_resnet = timm.is_model(backbone) and not os.path.isdir(backbone)
        timm_resnet = timm_resnet and timm.models.is_model_in_modules(backbone, ["resnet"])
        return 1 if data.dataset == "market1501" and timm_resnet else None


def build_reid_model(
    name: str, num_identities: int, *, pretrained: bool, seed: int, last_stride: int | None = None
) -> ReIDModel:
    """A `ReIDModel` on the backbone `name` (timm architecture, or transformers directory / Hub id)."""
    return _pretrained_or_explain(
        name,
        pretrained,
        lambda: ReIDModel.from_backbone(
            name, num_identities, pretrained=pretrained, seed=seed, last_stride=last_stride
        ),
    )


def _pretrained_or_explain(name: str, pretrained: bool, build: Callable[[], Model]) -> Model:
    try:
        return build()
    except OSError as error:
        if not pretrained:
            raise
        raise OSError(
            f"cannot get the pretrained weights of {name!r} ({type(error).__name__}: {error}). Without access to the "
            "Hugging Face Hub, pass a local directory holding the model, or train from scratch with --pretrained false."
        ) from error


def normalisation(model: nn.Module, name_or_path: str | None = None) -> dict[str, Any]:
    """The model's data config (`mean`, `std`, ...): timm's, else the image processor saved with it."""
    try:
        return data_config(model)
    except ValueError:
        if name_or_path is None:
            raise
        return data_config(processor=AutoImageProcessor.from_pretrained(name_or_path))
