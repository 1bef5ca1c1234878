"""Short descriptions of a model for model cards and cache records: its architecture name and parameter count."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel, TimmWrapperForImageClassification

from hf_dis.models.reid import ReIDModel


def describe(model: nn.Module) -> str:
    """A short architecture name: the timm architecture, the re-ID backbone, or the transformers model type."""
    if isinstance(model, TimmWrapperForImageClassification):
        return f"{model.config.architecture} (timm)"
    if isinstance(model, ReIDModel):
        return f"{model.config.backbone} ({model.config.backbone_source}) + BNNeck"
    if isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} ({model.config.model_type})"
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture")
    return f"{architecture} (timm)" if architecture else type(model).__name__


def num_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
