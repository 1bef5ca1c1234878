"""`ReIDModel`: the re-identification network of the BoT recipe (Luo et al. 2019, "Bag of Tricks and A Strong
Baseline for Deep Person Re-identification"): a backbone (timm or transformers) with global pooling, a BNNeck
(BatchNorm1d on the pooled feature, its shift frozen) and a bias-free identity classifier.

Outputs: `features` (the pooled feature, where the triplet loss acts), `embeddings` (after the BNNeck: the retrieval
embedding) and `logits` (identities, where the cross-entropy and the distillation act). It is a transformers
`PreTrainedModel` registered with the Auto classes, so `save_pretrained`, `from_pretrained`, the Trainer and
`AutoModelForImageClassification` work (a saved folder holds this file, so it also loads without hf_dis, with
`trust_remote_code=True`); it also follows timm's classifier protocol (`forward_features`,
`forward_head`, `get_classifier`), which is how `hf_dis.heads.split_classifier` finds its classifier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import ModelOutput


class ReIDConfig(PretrainedConfig):
    """Configuration of a `ReIDModel`.

    Args:
        backbone: a timm architecture name (`backbone_source="timm"`), or the `model_type` of a transformers backbone.
        backbone_source: ``timm`` or ``transformers``.
        backbone_config: the transformers backbone's config as a dict (`backbone_source="transformers"`).
        backbone_kwargs: extra keywords of `timm.create_model` (e.g. ``{"output_stride": 16}``).
        last_stride: 1 for BoT's "last stride 1": the last stage of a timm ResNet-family backbone does not downsample
            (no dilation either), which doubles the final feature map's height and width; None keeps the backbone's.
        num_labels: the number of training identities.
    """

    model_type = "hf_dis_reid"

    def __init__(
        self,
        backbone: str = "resnet50",
        backbone_source: str = "timm",
        backbone_config: dict[str, Any] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        last_stride: int | None = None,
        **kwargs: Any,
    ) -> None:
        if backbone_source not in ("timm", "transformers"):
            raise ValueError(f"backbone_source must be 'timm' or 'transformers', got {backbone_source!r}.")
        if backbone_source == "transformers" and backbone_config is None:
            raise ValueError("a transformers backbone needs its config: pass backbone_config (a dict).")
        if last_stride not in (None, 1):
            raise ValueError(f"last_stride must be 1 (BoT) or None (the backbone's own), got {last_stride!r}.")
        if last_stride is not None and backbone_source != "timm":
            raise ValueError("last_stride=1 applies to timm ResNet-family backbones only.")
        self.backbone = backbone
        self.backbone_source = backbone_source
        self.backbone_config = backbone_config
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.last_stride = last_stride
        super().__init__(**kwargs)


@dataclass
class ReIDOutput(ModelOutput):
    """`logits [B, C]` (or `[B, K']` on a sampled set), `features [B, d]` before the BNNeck, `embeddings [B, d]`
    after it, and `loss` (the plain identity cross-entropy, when labels are given)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None


class ReIDModel(PreTrainedModel):
    """Backbone + global pooling + BNNeck + identity classifier (see the module docstring)."""

    config_class = ReIDConfig
    config: ReIDConfig
    base_model_prefix = "reid"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False

    def __init__(self, config: ReIDConfig) -> None:
        super().__init__(config)
        if config.backbone_source == "timm":
            self.backbone = timm.create_model(config.backbone, num_classes=0, **config.backbone_kwargs)
            if config.last_stride == 1:
                _keep_last_stage_resolution(self.backbone, config.backbone)
            width = self.backbone.num_features
        else:
            self.backbone = AutoModel.from_config(AutoConfig.for_model(**config.backbone_config))
            width = _transformers_width(self.backbone.config)
        self.neck = nn.BatchNorm1d(width)
        self.neck.bias.requires_grad_(False)  # BoT: a BN without shift, so the embedding stays centred
        self.classifier = nn.Linear(width, config.num_labels, bias=False)
        self.post_init()

    @classmethod
    def from_backbone(
        cls,
        backbone: str,
        num_labels: int,
        *,
        pretrained: bool = False,
        seed: int | None = None,
        last_stride: int | None = None,
        **backbone_kwargs,
    ) -> ReIDModel:
        """A fresh re-ID model on a timm architecture (a name `timm.list_models()` knows) or a transformers backbone
        (a local directory or a Hub id), with its pretrained weights when `pretrained` (the neck and the classifier
        are always new). With `seed`, the random initialisation is reproducible; `last_stride`: see `ReIDConfig`."""
        if seed is not None:
            torch.manual_seed(seed)
        if timm.is_model(backbone) and not os.path.isdir(backbone):
            config = ReIDConfig(
                backbone, "timm", backbone_kwargs=backbone_kwargs, last_stride=last_stride, num_labels=num_labels
            )
            model = cls(config)
            if pretrained:
                source = timm.create_model(backbone, pretrained=True, num_classes=0, **backbone_kwargs)
                model.backbone.load_state_dict(source.state_dict())
            return model
        if backbone_kwargs or last_stride is not None:
            given = sorted(backbone_kwargs) + (["last_stride"] if last_stride is not None else [])
            raise ValueError(f"{given} apply to timm backbones only; {backbone!r} is a transformers model.")
        if pretrained:
            source = AutoModel.from_pretrained(backbone)
            config = ReIDConfig(
                source.config.model_type, "transformers", source.config.to_dict(), num_labels=num_labels
            )
            model = cls(config)
            model.backbone.load_state_dict(source.state_dict())
            return model
        backbone_config = AutoConfig.from_pretrained(backbone).to_dict()
        return cls(ReIDConfig(backbone_config["model_type"], "transformers", backbone_config, num_labels=num_labels))

    def _init_weights(self, module: nn.Module) -> None:
        # Only the parts this class adds: the backbone keeps its own (timm's or its checkpoint's) initialisation.
        if module is self.neck:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif module is self.classifier:
            nn.init.normal_(module.weight, std=0.001)  # BoT's classifier initialisation

    @property
    def pretrained_cfg(self) -> dict | None:
        """The timm backbone's data config (input size, mean, std), read by `hf_dis.data.data_config`."""
        return getattr(self.backbone, "pretrained_cfg", None)

    # timm's classifier protocol, used by hf_dis.heads.split_classifier
    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, d]` pooled backbone feature (before the BNNeck)."""
        if self.config.backbone_source == "timm":
            return self.backbone(pixel_values)
        outputs = self.backbone(pixel_values=pixel_values)
        pooled = getattr(outputs, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else outputs.last_hidden_state[:, 0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embeddings = self.neck(features)
        return embeddings if pre_logits else self.classifier(embeddings)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> ReIDOutput:
        features = self.forward_features(pixel_values)
        embeddings = self.neck(features)
        logits = self.classifier(embeddings)
        loss = None
        if labels is not None and logits.shape[-1] == self.config.num_labels:
            loss = F.cross_entropy(logits.float(), labels)
        return ReIDOutput(loss=loss, logits=logits, features=features, embeddings=embeddings)


def _keep_last_stage_resolution(backbone: nn.Module, name: str) -> None:
    """BoT's "last stride 1", in place: the first block of the last stage (`layer4`) of a timm ResNet-family backbone
    stops downsampling (its stride-2 convolutions stride 1, an average-pool shortcut is dropped). No parameter
    changes, so pretrained weights load as they are. Defined here so that a saved model's code is self-contained."""
    stage = getattr(backbone, "layer4", None)
    changed = 0
    if isinstance(stage, nn.Sequential) and len(stage) > 0:
        block = stage[0]
        for path, module in list(block.named_modules()):
            if isinstance(module, nn.Conv2d) and tuple(module.stride) == (2, 2):
                module.stride = (1, 1)
                changed += 1
            elif isinstance(module, nn.AvgPool2d) and module.stride in (2, (2, 2)):
                block.set_submodule(path, nn.Identity())
                changed += 1
    if not changed:
        raise ValueError(
            f"last_stride=1 needs a timm ResNet-family backbone (a layer4 whose first block downsamples); {name!r} has "
            "none."
        )


def _transformers_width(config: PretrainedConfig) -> int:
    """The pooled feature width of a transformers backbone."""
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:
        return hidden_sizes[-1]
    width = getattr(config, "hidden_size", None)
    if width is None:
        raise ValueError(f"cannot tell the feature width of a {config.model_type} backbone (no hidden_size(s)).")
    return width


# Saved folders carry this file (auto_map in config.json): they load with transformers alone and
# trust_remote_code=True, or without it where hf_dis is imported (the registration below).
ReIDConfig.register_for_auto_class()
ReIDModel.register_for_auto_class("AutoModelForImageClassification")
AutoConfig.register(ReIDConfig.model_type, ReIDConfig, exist_ok=True)
AutoModel.register(ReIDConfig, ReIDModel, exist_ok=True)
AutoModelForImageClassification.register(ReIDConfig, ReIDModel, exist_ok=True)
