"""A classifier that computes logits only at a sampled set of classes while the model runs its own forward.

`install_sampled_head(model)` swaps the model's `nn.Linear` classifier for a `SampledLinear` that shares its weight
and bias Parameters, so the state dict, `save_pretrained` and the optimizer see the same tensors under the same names.
Inside `head.restricted_to(classes)` the model's own `forward` returns logits at those classes only (`[B, K']`): the
`[B, C]` logits are never formed. Going through the model's forward (rather than calling its feature extractor
directly) is what keeps DDP's gradient synchronisation and Accelerate's autocast in the loop.

With `sparse_grad = True`, a restricted forward makes the weight's gradient a sparse tensor over the rows it used
(see `subset_logits`): no `[C, d]` gradient is written, and the rows a step trained are that gradient's indices (what
the row-sparse optimizers update).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from hf_dis.heads.split import split_classifier, subset_logits
from hf_dis.step_parts import HEAD


class ClassRestriction:
    """What a classifier module restricted to a class subset shares: `restricted_to(classes)` sets the classes its
    `forward` computes logits at (`_classes`, None outside the block)."""

    _classes: torch.Tensor | None = None

    @contextmanager
    def restricted_to(self, classes: torch.Tensor) -> Iterator[None]:
        """Within the block, `forward` returns logits at `classes`: `[K']` (one set for the batch) or `[B, K']`."""
        if self._classes is not None:
            raise RuntimeError("this head is already restricted to a class subset (nested restricted_to).")
        self._classes = classes
        try:
            yield
        finally:
            self._classes = None


class SampledLinear(ClassRestriction, nn.Linear):
    """An `nn.Linear` that, inside `restricted_to(classes)`, returns logits at `classes` only (see `subset_logits`).

    Outside that context it is exactly `nn.Linear`.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        #: Restricted forwards give the weight a sparse gradient over the rows they used (row-sparse optimizers).
        self.sparse_grad = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self._classes is not None and features.dim() != 2:
            raise ValueError(
                f"sampled logits need the classifier's input to be [batch, features], got {tuple(features.shape)}."
            )
        with record_function(HEAD):  # the classifier's part of a profiled step (hf_dis.step_parts)
            if self._classes is None:
                return F.linear(features, self.weight, self.bias)
            return subset_logits(features, self, self._classes, sparse_grad=self.sparse_grad)


def install_sampled_head(model: nn.Module) -> SampledLinear:
    """Replace `model`'s linear classifier (found as `split_classifier` finds it) by a `SampledLinear` sharing its
    Parameters, in place, and return it. Idempotent: a model that already has one gets it back."""
    split = split_classifier(model)
    head = split.head
    if isinstance(head, SampledLinear):
        return head
    paths = [name for name, module in model.named_modules(remove_duplicate=False) if module is head]
    if len(paths) > 1:
        raise ValueError(
            f"{type(model).__name__} registers its classifier under several names ({paths}); it cannot be replaced "
            "in place."
        )
    sampled = SampledLinear(head)
    model.set_submodule(split.head_path, sampled)
    return sampled
