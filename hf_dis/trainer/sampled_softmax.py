"""Hard-label training over a sampled set of classes, for teachers with 10^5+ classes (Partial FC, An et al. 2022).

Each optimizer step's softmax covers the batch's labels and other classes drawn uniformly without replacement, K in
all (or every label when the batch holds more than K), one set for the batch: the `[B, C]` logits are never formed,
and the classifier's cost is that of K rows. The softmax over the set is plain (Partial FC's choice, no log-Q
correction). Evaluation and the saved model use every class. The draws are keyed by (seed, optimizer step, process),
so that a resumed run draws what an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hf_dis.heads import install_sampled_head
from hf_dis.trainer.internals import across_devices_loss_scale, count_loss_items


def partial_fc_classes(
    labels: torch.Tensor, num_classes: int, num_sampled: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampled set: the batch's distinct labels, then `num_sampled - len(labels)` other classes drawn uniformly
    without replacement; and each label's position in the set (the targets of the set's softmax)."""
    positives, targets = labels.unique(return_inverse=True)
    num_negatives = min(num_sampled, num_classes) - positives.numel()
    if num_negatives <= 0:
        return positives, targets
    weights = torch.ones(num_classes)
    weights[positives.cpu()] = 0
    negatives = torch.multinomial(weights, num_negatives, replacement=False, generator=generator)
    return torch.cat([positives, negatives.to(positives.device)]), targets


class SampledSoftmaxTraining:
    """A Trainer mixin: training steps take the cross-entropy over `partial_fc_classes` (K = `args.sampled_classes`,
    0 for the model's own loss over every class); evaluation is unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_sampled = self.args.sampled_classes
        if self.num_sampled > 0:
            self.sampled_head = install_sampled_head(self.model)
            count_loss_items(self)

    def run_settings(self) -> dict[str, Any]:
        return {**super().run_settings(), "sampled_classes": self.num_sampled}

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None
    ):
        if self.num_sampled <= 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        if not model.training:  # every class
            outputs = model(pixel_values=inputs["pixel_values"])
            loss = F.cross_entropy(outputs.logits.float(), labels)
            return (loss, outputs) if return_outputs else loss
        key = f"{self.args.seed}:{self.state.global_step}:{self.args.process_index}".encode()
        generator = torch.Generator().manual_seed(
            int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        )
        classes, targets = partial_fc_classes(labels, self.sampled_head.out_features, self.num_sampled, generator)
        with self.sampled_head.restricted_to(classes):
            outputs = model(pixel_values=inputs["pixel_values"])
        loss = F.cross_entropy(outputs.logits.float(), targets, reduction="sum")
        if num_items_in_batch is None:  # outside the training loop: a batch mean
            loss = loss / labels.numel()
        else:
            loss = loss / num_items_in_batch * across_devices_loss_scale(self)
        return (loss, outputs) if return_outputs else loss
