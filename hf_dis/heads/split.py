"""Split an image classifier into (feature extractor, linear head), so that logits are computed for a class subset.

Supported: plain timm models (`forward_features` + `forward_head(pre_logits=True)`), transformers'
`TimmWrapperForImageClassification`, and the transformers image classifiers listed in `HF_FAMILIES`, whose
classifier is one `nn.Linear` applied to a pooled feature. The split never changes the model: `SplitClassifier`
holds it as its only submodule (so it can be wrapped by DDP and saved as is) and finds the head by path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TimmWrapperForImageClassification

from hf_dis.heads.gathered import gathered_logits


@dataclass(frozen=True)
class HFFamily:
    """How a transformers `*ForImageClassification` turns its base model's output into the classifier's input."""

    pooling: str  # "pooler_output" (flattened) or "cls_token" (last_hidden_state[:, 0])
    head_path: str  # where the nn.Linear sits
    dropout: str | None = None  # attribute of a dropout applied before the head, if any


HF_FAMILIES: dict[str, HFFamily] = {
    "resnet": HFFamily("pooler_output", "classifier.1"),
    "regnet": HFFamily("pooler_output", "classifier.1"),
    "convnext": HFFamily("pooler_output", "classifier"),
    "convnextv2": HFFamily("pooler_output", "classifier"),
    "swin": HFFamily("pooler_output", "classifier"),
    "swinv2": HFFamily("pooler_output", "classifier"),
    "mobilenet_v2": HFFamily("pooler_output", "classifier", dropout="dropout"),
    "efficientnet": HFFamily("pooler_output", "classifier", dropout="dropout"),
    "vit": HFFamily("cls_token", "classifier"),
    "deit": HFFamily("cls_token", "classifier"),
}


#: Per-example sets: one dense product is used when it costs at most this many times the multiply-adds of gathering
#: each example's rows: over all C classes when C <= factor x K' (nothing to find, so no host-device
#: synchronisation), else over the union U of the batch's classes when B x |U| <= factor x B x K'. A dense GEMM runs
#: tens of times faster per multiply-add than the batched matrix-vector products of the gathered path.
UNION_COST_FACTOR = 16


def subset_logits(
    features: torch.Tensor, head: nn.Linear, classes: torch.Tensor | None = None, *, sparse_grad: bool = False
) -> torch.Tensor:
    """Logits of `head` at the classes S only.

    Args:
        features: `[B, d]`.
        head: the `nn.Linear(d, C)` classifier.
        classes: None for all C classes (`[B, C]`); `[K']` for one S shared by the batch (one GEMM on the selected
            rows, `[B, K']`); `[B, K']` for a per-example S (`[B, K']`: one GEMM over all C classes or over the
            union of the batch's classes, then a gather, when that is cheap by `UNION_COST_FACTOR`; else each
            example's rows gathered, a chunk of examples at a time: `gathered_logits`).
        sparse_grad: gather the weight's rows so that its gradient is a sparse tensor over those rows (as
            `nn.Embedding(sparse=True)`) instead of a dense `[C, d]` one; the bias's gradient stays dense (`[C]`).
            Per-example sets then never take the all-classes GEMM (its gradient would cover every row).
    """
    if classes is None:
        return head(features)

    def weight_rows(index: torch.Tensor) -> torch.Tensor:
        return F.embedding(index, head.weight, sparse=True) if sparse_grad else head.weight[index]

    if classes.dim() == 1:
        return F.linear(features, weight_rows(classes), None if head.bias is None else head.bias[classes])
    if not sparse_grad and head.out_features <= UNION_COST_FACTOR * classes.shape[-1]:
        return F.linear(features, head.weight, head.bias).gather(1, classes)
    union, position = torch.unique(classes, return_inverse=True)  # the union's size: a host-device synchronisation
    if features.shape[0] * union.numel() <= UNION_COST_FACTOR * classes.numel():
        bias = None if head.bias is None else head.bias[union]
        return F.linear(features, weight_rows(union), bias).gather(1, position)
    logits = gathered_logits(features, head.weight, classes, sparse_grad=sparse_grad, union=(union, position))
    if head.bias is None:
        return logits
    return logits + head.bias[classes].to(logits.dtype)  # bf16 under autocast, like F.linear


class SplitClassifier(nn.Module):
    """A classifier seen as features + linear head. `forward(pixel_values, classes)` returns `(features, logits)`
    with logits at `classes` only (see `subset_logits`); the wrapped model is unchanged and remains `self.model`."""

    def __init__(self, model: nn.Module, head_path: str, family: str) -> None:
        super().__init__()
        self.model = model
        self.head_path = head_path
        self.family = family
        head = self.head
        if not isinstance(head, nn.Linear):
            raise ValueError(
                f"{type(model).__name__}'s classifier at {head_path!r} is {type(head).__name__}, not nn.Linear "
                "(a model built with no classes, or a head this library does not support)."
            )

    @property
    def head(self) -> nn.Linear:
        return self.model.get_submodule(self.head_path)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, d]`: exactly what the model's own forward feeds its classifier."""
        if self.family == "timm":
            return _timm_features(self.model, pixel_values)
        if self.family == "timm_wrapper":
            return _timm_features(self.model.timm_model, pixel_values)
        return _hf_features(self.model, HF_FAMILIES[self.family], pixel_values)

    def logits(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        return subset_logits(features, self.head, classes)

    def forward(self, pixel_values: torch.Tensor, classes: torch.Tensor | None = None):
        features = self.features(pixel_values)
        return features, self.logits(features, classes)


def _timm_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(pixel_values), pre_logits=True)


def _hf_features(model: nn.Module, family: HFFamily, pixel_values: torch.Tensor) -> torch.Tensor:
    outputs = model.base_model(pixel_values)
    if family.pooling == "cls_token":
        features = outputs.last_hidden_state[:, 0]
    else:
        features = outputs.pooler_output.flatten(1)
    if family.dropout is not None:
        features = getattr(model, family.dropout)(features)
    return features


def _supported() -> str:
    hf = ", ".join(sorted(HF_FAMILIES))
    return f"plain timm models, transformers' TimmWrapperForImageClassification, and transformers models of type {hf}"


def split_classifier(model: nn.Module) -> SplitClassifier:
    """Split `model` into features and its single linear classifier.

    Raises:
        ValueError: the model is not of a supported family, or its head is not one nn.Linear (e.g. DeiT's
            two-headed `DeiTForImageClassificationWithTeacher`), naming the model class and what is supported.
    """
    if isinstance(model, SplitClassifier):
        return model
    name = type(model).__name__
    if isinstance(model, TimmWrapperForImageClassification):
        return SplitClassifier(model, "timm_model." + _timm_head_path(model.timm_model, name), "timm_wrapper")
    if hasattr(model, "forward_head") and hasattr(model, "get_classifier"):
        return SplitClassifier(model, _timm_head_path(model, name), "timm")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in HF_FAMILIES and name.endswith("ForImageClassification"):
        return SplitClassifier(model, HF_FAMILIES[model_type].head_path, model_type)
    raise ValueError(
        f"split_classifier does not support {name} (model_type={model_type!r}); it supports {_supported()}."
    )


def _timm_head_path(model: nn.Module, name: str) -> str:
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        kind = "several heads" if isinstance(head, (tuple, list)) else type(head).__name__
        raise ValueError(
            f"split_classifier needs a single nn.Linear classifier; {name}'s is {kind}. It supports {_supported()}."
        )
    for path, module in model.named_modules():
        if module is head:
            return path
    raise ValueError(f"{name}.get_classifier() returned a module that is not part of the model.")
