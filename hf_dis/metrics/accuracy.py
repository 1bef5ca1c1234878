"""Top-k classification accuracy, from logits or from each example's ranked classes, and the reduction of a batch's
logits to its ranked classes (`top_classes_for_metrics`) that keeps evaluation's memory O(N k) instead of O(N C)."""

from __future__ import annotations

import torch

#: Classes kept per example by `top_classes_for_metrics`: enough for top-1 and top-5 accuracy.
RANKED_CLASSES = 5
#: Rows ranked at a time: the comparisons' `[rows, C]` temporaries stay bounded however many examples there are.
ROWS_PER_CHUNK = 1024


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of examples whose label is among the k highest logits, for each k (`top1`, `top5`, ...).

    Exact ties are broken toward the lower class id, as `argmax` breaks them: the label's rank is the number of classes
    with a higher logit plus those with an equal one and a lower id, computed `ROWS_PER_CHUNK` rows at a time.
    (`topk` leaves the order of equal values to its implementation, so an argmax over the same logits could disagree
    with it.)

    Args:
        logits: `[N, C]` scores (numpy arrays are accepted).
        labels: `[N]` class ids.
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long()
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}.")
    if logits.shape[0] == 0:
        raise ValueError("topk_accuracy needs at least one example.")
    chunks = range(0, len(labels), ROWS_PER_CHUNK)
    rank = torch.cat([label_rank(logits[i : i + ROWS_PER_CHUNK], labels[i : i + ROWS_PER_CHUNK]) for i in chunks])
    return {f"top{k}": float((rank < k).double().mean()) for k in ks}


def label_rank(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`[N]` each label's 0-based rank among its row's logits, exact ties going to the lower class id."""
    label_logit = logits.gather(1, labels[:, None])
    lower_id = torch.arange(logits.shape[1], device=logits.device) < labels[:, None]
    return (logits > label_logit).sum(1) + ((logits == label_logit) & lower_id).sum(1)


def classification_metrics(prediction) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: `accuracy` (top-1) and `top5` of an `EvalPrediction` whose predictions are
    logits (`[N, C]`, floating point) or each example's highest-scoring classes (`[N, k]` integer class ids, best
    first: what a classifier sharded over processes predicts, `classifier_parallel`; top-5 over the first min(5, k)).
    """
    predictions, labels = torch.as_tensor(prediction.predictions), torch.as_tensor(prediction.label_ids).long()
    if predictions.is_floating_point():
        result = topk_accuracy(predictions, labels, ks=(1, 5))
        return {"accuracy": result["top1"], "top5": result["top5"]}
    if predictions.dim() != 2 or labels.shape != (predictions.shape[0],) or predictions.shape[0] == 0:
        raise ValueError(
            f"ranked classes must be [N, k] and labels [N], got {tuple(predictions.shape)} and {tuple(labels.shape)}."
        )
    hits = predictions.long() == labels.unsqueeze(1)
    return {"accuracy": float(hits[:, :1].any(1).double().mean()), "top5": float(hits[:, :5].any(1).double().mean())}


def ranked_classes(logits: torch.Tensor, k: int = RANKED_CLASSES) -> torch.Tensor:
    """`[N, min(k, C)]` each row's highest-scoring class ids, best first, exact ties going to the lower class id (as
    `label_rank` and `argmax` break them): what `classification_metrics` needs of `[N, C]` logits, in O(N k)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, C], got {tuple(logits.shape)}.")
    k = min(k, logits.shape[1])
    values, ids = logits.topk(k, dim=1)
    # Equal values inside the top k: lower id first (a stable sort by id, then a stable sort by value, descending).
    by_id = ids.sort(dim=1, stable=True).indices
    values, ids = values.gather(1, by_id), ids.gather(1, by_id)
    by_value = values.sort(dim=1, descending=True, stable=True).indices
    values, ids = values.gather(1, by_value), ids.gather(1, by_value)
    # A tie across the boundary (more classes equal to the k-th value than the top k kept): topk's choice among them
    # is its own; those rows are ranked again over their tied classes.
    boundary = values[:, -1:]
    tied = ((logits == boundary).sum(1) > (values == boundary).sum(1)).nonzero().flatten()
    for row in tied.tolist():
        candidates = (logits[row] >= boundary[row]).nonzero().flatten()  # ascending ids
        order = logits[row, candidates].sort(descending=True, stable=True).indices[:k]
        ids[row] = candidates[order]
    return ids


def top_classes_for_metrics(logits: torch.Tensor | tuple, labels: torch.Tensor | None = None) -> torch.Tensor:
    """`Trainer`'s `preprocess_logits_for_metrics` for `classification_metrics`: each batch's logits reduced to its
    `RANKED_CLASSES` highest classes (`ranked_classes`), so that evaluation accumulates `[N, 5]` class ids instead of
    `[N, C]` logits (at C = 10^5 and N = 10^5: 4 MB instead of 40 GB). `DistillationTrainer` sets it by itself when
    its `compute_metrics` is `classification_metrics`."""
    if isinstance(logits, (tuple, list)):  # a model that outputs more than logits: the logits come first
        logits = logits[0]
    return ranked_classes(logits.detach())
