"""Re-identification metrics under the Market-1501 protocol: CMC (rank-k), mAP and mINP.

For each query, the gallery is ranked by distance (ascending; ties keep gallery order) and the gallery images with
the query's identity **and** camera are removed (the same person seen by the same camera is not a re-identification).
Distractors (pid 0) stay in the gallery, as wrong matches. A query with no remaining true match is skipped and
counted. Per valid query: rank-k = a true match within the first k; AP = mean over true matches of the precision at
that match; INP = (number of true matches) / (rank of the last one) (Ye et al. 2021). Sums run in float64.

Everything is vectorised over a chunk of queries, and `reid_metrics_from_features` computes distances chunk by chunk,
so a 3,368 x 19,732 evaluation (or ten times larger) never holds more than `chunk_size` distance rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RANKS = (1, 5, 10)


def reid_metrics(
    distmat: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    *,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """CMC rank-1/5/10, mAP and mINP (fractions in [0, 1]) from a distance matrix.

    Args:
        distmat: `[Q, G]` distances (smaller = more similar); numpy arrays are accepted.
        q_pids, q_camids: `[Q]` query identities and cameras.
        g_pids, g_camids: `[G]` gallery identities and cameras.
        chunk_size: queries ranked at once.

    Returns:
        `rank1`, `rank5`, `rank10`, `mAP`, `mINP` (Python floats) and `num_valid_queries`, `num_skipped_queries`.
    """
    distmat = torch.as_tensor(distmat)
    q_pids, g_pids, q_camids, g_camids = (torch.as_tensor(x).long() for x in (q_pids, g_pids, q_camids, g_camids))
    _check_shapes(distmat.shape, q_pids, g_pids, q_camids, g_camids)
    totals = _Totals()
    for start in range(0, distmat.shape[0], chunk_size):
        stop = start + chunk_size
        totals.add(distmat[start:stop], q_pids[start:stop], q_camids[start:stop], g_pids, g_camids)
    return totals.result()


def reid_metrics_from_features(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    *,
    metric: str = "euclidean",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """`reid_metrics` from `[Q, d]` / `[G, d]` embeddings, computing `chunk_size` distance rows at a time.

    Args:
        metric: ``euclidean`` (squared Euclidean distances: the same ranking) or ``cosine`` (1 - cosine similarity).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}.")
    query_features, gallery_features = torch.as_tensor(query_features), torch.as_tensor(gallery_features)
    if query_features.dim() != 2 or gallery_features.dim() != 2 or query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            f"features must be [Q, d] and [G, d] with the same d, got {tuple(query_features.shape)} and "
            f"{tuple(gallery_features.shape)}."
        )
    q_pids, g_pids, q_camids, g_camids = (torch.as_tensor(x).long() for x in (q_pids, g_pids, q_camids, g_camids))
    _check_shapes((query_features.shape[0], gallery_features.shape[0]), q_pids, g_pids, q_camids, g_camids)
    gallery = gallery_features.double()
    if metric == "cosine":
        gallery = F.normalize(gallery, dim=1)
    gallery_sq = gallery.square().sum(1)
    totals = _Totals()
    for start in range(0, query_features.shape[0], chunk_size):
        stop = start + chunk_size
        query = query_features[start:stop].double()
        if metric == "cosine":
            distances = 1 - F.normalize(query, dim=1) @ gallery.T
        else:
            distances = query.square().sum(1, keepdim=True) + gallery_sq - 2 * query @ gallery.T
        totals.add(distances, q_pids[start:stop], q_camids[start:stop], g_pids, g_camids)
    return totals.result()


def _check_shapes(shape, q_pids, g_pids, q_camids, g_camids) -> None:
    num_query, num_gallery = shape
    if num_query == 0 or num_gallery == 0:
        raise ValueError(f"need at least one query and one gallery item, got {num_query} and {num_gallery}.")
    if q_pids.shape != (num_query,) or q_camids.shape != (num_query,):
        raise ValueError(
            f"{num_query} queries but q_pids {tuple(q_pids.shape)} and q_camids {tuple(q_camids.shape)}: one id and "
            "one camera per query row."
        )
    if g_pids.shape != (num_gallery,) or g_camids.shape != (num_gallery,):
        raise ValueError(
            f"{num_gallery} gallery items but g_pids {tuple(g_pids.shape)} and g_camids {tuple(g_camids.shape)}: one "
            "id and one camera per gallery column."
        )


class _Totals:
    """Per-query sums over chunks, in float64."""

    def __init__(self) -> None:
        self.hits = {k: 0.0 for k in RANKS}
        self.average_precision = 0.0
        self.inverse_negative_penalty = 0.0
        self.valid = 0
        self.skipped = 0

    def add(self, distances, q_pids, q_camids, g_pids, g_camids) -> None:
        order = torch.argsort(distances, dim=1, stable=True)
        ranked_pids, ranked_camids = g_pids[order], g_camids[order]
        same_pid = ranked_pids == q_pids[:, None]
        kept = ~(same_pid & (ranked_camids == q_camids[:, None]))
        match = same_pid & kept
        position = kept.long().cumsum(1) - 1  # 0-based rank among the kept gallery items
        num_matches = match.sum(1)
        valid = num_matches > 0
        self.skipped += int((~valid).sum())
        match, position, num_matches = match[valid], position[valid], num_matches[valid].double()
        if match.shape[0] == 0:
            return
        self.valid += match.shape[0]
        first = torch.where(match, position, position.shape[1]).min(1).values
        for k in RANKS:
            self.hits[k] += float((first < k).sum())
        # Precision at each true match (positions of removed items are meaningless: masked out, never divided by).
        precision = match.double().cumsum(1) / (position.clamp_min(0).double() + 1)
        self.average_precision += float((torch.where(match, precision, 0.0).sum(1) / num_matches).sum())
        last = torch.where(match, position, -1).max(1).values
        self.inverse_negative_penalty += float((num_matches / (last.double() + 1)).sum())

    def result(self) -> dict[str, float]:
        if self.valid == 0:
            raise ValueError(f"no query has a true match in the gallery from another camera ({self.skipped} skipped).")
        metrics = {f"rank{k}": self.hits[k] / self.valid for k in RANKS}
        metrics["mAP"] = self.average_precision / self.valid
        metrics["mINP"] = self.inverse_negative_penalty / self.valid
        metrics["num_valid_queries"] = self.valid
        metrics["num_skipped_queries"] = self.skipped
        return metrics


def reid_eval_metrics(prediction, metric: str = "euclidean") -> dict[str, float]:
    """`compute_metrics` for the re-ID trainers: an `EvalPrediction` whose predictions are `[N, d]` embeddings of
    query and gallery together and whose label ids are `[N, 3]` (pid, camid, is_query; see
    `hf_dis.data.reid_eval_dataset`) -> `reid_metrics_from_features`."""
    embeddings = torch.as_tensor(prediction.predictions)
    ids = torch.as_tensor(prediction.label_ids).long()
    if ids.dim() != 2 or ids.shape[1] != 3 or ids.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"reid_eval_metrics needs label ids [N, 3] (pid, camid, is_query) for {embeddings.shape[0]} embeddings, "
            f"got {tuple(ids.shape)}; evaluate on hf_dis.data.reid_eval_dataset(query, gallery)."
        )
    is_query = ids[:, 2].bool()
    pids, camids = ids[:, 0], ids[:, 1]
    return reid_metrics_from_features(
        embeddings[is_query],
        embeddings[~is_query],
        pids[is_query],
        pids[~is_query],
        camids[is_query],
        camids[~is_query],
        metric=metric,
    )
