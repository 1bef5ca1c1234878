"""Top-k classification accuracy."""

from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of examples whose label is among the k highest logits, for each k (`top1`, `top5`, ...).

    Args:
        logits: `[N, C]` scores (numpy arrays are accepted).
        labels: `[N]` class ids.
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long()
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}.")
    if logits.shape[0] == 0:
        raise ValueError("topk_accuracy needs at least one example.")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return {f"top{k}": float(hit[:, :k].any(1).double().mean()) for k in ks}


def classification_metrics(prediction) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: `accuracy` (top-1) and `top5` of an `EvalPrediction` (logits, label ids)."""
    result = topk_accuracy(prediction.predictions, prediction.label_ids, ks=(1, 5))
    return {"accuracy": result["top1"], "top5": result["top5"]}
