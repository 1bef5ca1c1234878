"""timm classifiers inside transformers' `TimmWrapperForImageClassification` (so `Trainer`, `save_pretrained`,
`push_to_hub` and `AutoModelForImageClassification` work): `timm_classifier` builds one keeping timm's own
initialisation, `wrap_timm_model` wraps an existing timm model without copying it, `timm_module` unwraps one."""

from __future__ import annotations

import logging

import timm
import torch
from torch import nn
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

logger = logging.getLogger(__name__)


def timm_classifier(
    architecture: str, num_classes: int, seed: int | None = None, pretrained: bool = False
) -> TimmWrapperForImageClassification:
    """A freshly initialised timm `architecture` with `num_classes` outputs, wrapped for transformers.

    The wrapper alone re-initialises weights transformers-style (normal(0, 0.02)), which loses timm's own
    initialisation (such as zero-initialised last BN in residual blocks) and trains worse from scratch; this keeps
    timm's. With `seed`, the weights are those of `timm.create_model` right after `torch.manual_seed(seed)`. With
    `pretrained`, timm's pretrained weights (downloaded from the Hub; the classifier is new when `num_classes`
    differs from theirs).
    """
    if seed is not None:
        torch.manual_seed(seed)
    # first: the seed gives timm's weights
    timm_model = timm.create_model(architecture, num_classes=num_classes, pretrained=pretrained)
    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=architecture, num_labels=num_classes))
    wrapper.timm_model.load_state_dict(timm_model.state_dict())
    return wrapper


def timm_module(model: nn.Module) -> nn.Module:
    """The timm model a `TimmWrapperForImageClassification` holds; any other model as it is."""
    return model.timm_model if isinstance(model, TimmWrapperForImageClassification) else model


def wrap_timm_model(model: nn.Module) -> TimmWrapperForImageClassification | None:
    """`model` (a plain timm classifier) inside a `TimmWrapperForImageClassification`, sharing its modules and
    parameters, so that `save_pretrained` writes a folder `AutoModelForImageClassification` loads (offline, same
    predictions). None, with a warning, when timm's `architecture` with `num_classes` alone does not rebuild the same
    parameters (the model was created with other keyword arguments): such a model is saved as a state dict only."""
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture")
    num_classes = getattr(model, "num_classes", 0)
    if architecture is None or not timm.is_model(architecture) or num_classes <= 0:
        logger.warning("%s is not a timm classifier that transformers can rebuild.", type(model).__name__)
        return None
    config = TimmWrapperConfig(architecture=architecture, num_labels=num_classes)
    with torch.device("meta"):  # the shape of the model only: no memory, no initialisation
        wrapper = TimmWrapperForImageClassification(config)
    rebuilt = {name: tuple(t.shape) for name, t in wrapper.timm_model.state_dict().items()}
    if rebuilt != {name: tuple(t.shape) for name, t in model.state_dict().items()}:
        logger.warning(
            "timm.create_model(%r, num_classes=%d) does not rebuild this student's parameters (was it created with "
            "other arguments?): it is saved as a state dict that AutoModelForImageClassification cannot load. Build "
            "the student with hf_dis.timm_classifier to save it in the transformers format.",
            architecture,
            num_classes,
        )
        return None
    wrapper.timm_model = model
    return wrapper
