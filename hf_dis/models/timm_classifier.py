"""`timm_classifier`: timm architectures inside transformers' `TimmWrapperForImageClassification` (so `Trainer`,
`save_pretrained` and `AutoModelForImageClassification` work), keeping timm's own initialisation."""

from __future__ import annotations

import timm
import torch
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification


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
