"""Batch-hard triplet loss (Hermans et al. 2017, "In Defense of the Triplet Loss for Person Re-Identification"), the
metric-learning term of the BoT re-ID recipe (Luo et al. 2019). It needs batches holding several images of each
identity: see `hf_dis.data.IdentitySampler`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float | None = 0.3) -> torch.Tensor:
    """For each anchor, its farthest same-identity and its closest other-identity example in the batch:
    `max(0, margin + d(a, p_hard) - d(a, n_hard))`, or `softplus(d(a, p_hard) - d(a, n_hard))` with `margin=None`
    (the soft margin). Euclidean distances, computed in float32; averaged over the anchors that have both a positive
    and a negative in the batch (0 with a gradient when none has).

    Args:
        features: `[B, d]` embeddings (BoT: the pooled feature before the BNNeck).
        labels: `[B]` identity ids.
        margin: the hinge margin (> 0), or None for the soft margin.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be [B, d] and labels [B], got {tuple(features.shape)} and {tuple(labels.shape)}."
        )
    if margin is not None and margin <= 0:
        raise ValueError(f"margin must be > 0 (or None for the soft margin), got {margin}.")
    features = features.float()
    squared = (features.unsqueeze(1) - features.unsqueeze(0)).pow(2).sum(-1)
    distances = squared.clamp_min(1e-12).sqrt()  # the clamp keeps sqrt's gradient finite on the diagonal
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives, negatives = same & not_self, ~same
    hardest_positive = distances.masked_fill(~positives, float("-inf")).amax(1)
    hardest_negative = distances.masked_fill(~negatives, float("inf")).amin(1)
    valid = positives.any(1) & negatives.any(1)
    if not bool(valid.any()):
        return features.sum() * 0.0
    gap = hardest_positive[valid] - hardest_negative[valid]
    losses = F.softplus(gap) if margin is None else F.relu(gap + margin)
    return losses.mean()
