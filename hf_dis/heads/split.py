"""Split an image classifier into (feature extractor, linear head), so that logits are computed for a class subset.

Supported: plain timm models (their `get_classifier()`), transformers' `TimmWrapperForImageClassification`, and the
transformers image classifiers listed in `HF_HEAD_PATHS`, whose classifier is one `nn.Linear` applied to a pooled
feature. The split never changes the model: `SplitClassifier`
holds it and finds the head by path (which `install_sampled_head` replaces in place).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TimmWrapperForImageClassification

from hf_dis.heads.gathered import gathered_logits
from hf_dis.models.timm_classifier import timm_module

#: transformers `*ForImageClassification` model types whose classifier is one `nn.Linear`, and where it sits.
HF_HEAD_PATHS: dict[str, str] = {
    "resnet": "classifier.1",
    "regnet": "classifier.1",
    "convnext": "classifier",
    "convnextv2": "classifier",
    "swin": "classifier",
    "swinv2": "classifier",
    "mobilenet_v2": "classifier",
    "efficientnet": "classifier",
    "vit": "classifier",
    "deit": "classifier",
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


class SplitClassifier:
    """A classifier seen as features + its linear head, found by path (`head_path`); the model is not changed and
    remains `self.model`. `logits(features, classes)` gives the logits at `classes` only (see `subset_logits`)."""

    def __init__(self, model: nn.Module, head_path: str) -> None:
        self.model = model
        self.head_path = head_path
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
        """`[B, d]`: the input the model's own forward feeds its classifier, taken from that forward (so it is what
        the model computes, in every family). The forward computes all C logits too, unless the head is a restricted
        `SampledLinear` (`hf_dis.heads.install_sampled_head`), as a sampled training step's is."""
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.model(pixel_values)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"{type(self.model).__name__}'s forward called its classifier {len(captured)} times, not once: its "
                "features cannot be read from it."
            )
        return captured[0]

    def logits(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        return subset_logits(features, self.head, classes)


def _supported() -> str:
    hf = ", ".join(sorted(HF_HEAD_PATHS))
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
        return SplitClassifier(model, "timm_model." + _timm_head_path(timm_module(model), name))
    if hasattr(model, "forward_head") and hasattr(model, "get_classifier"):
        return SplitClassifier(model, _timm_head_path(model, name))
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in HF_HEAD_PATHS and name.endswith("ForImageClassification"):
        return SplitClassifier(model, HF_HEAD_PATHS[model_type])
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
