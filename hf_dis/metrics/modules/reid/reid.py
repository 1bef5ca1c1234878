"""`evaluate` module: re-identification metrics (CMC rank-1/5/10, mAP, mINP) under the Market-1501 protocol.

Load it offline with `hf_dis.metrics.load("reid")`. Rows are queries: each adds its distance row to every gallery
item, its identity and its camera; the gallery's identities and cameras are passed to `compute`.
"""

import datasets
import evaluate
import numpy as np

from hf_dis.metrics import metric_info
from hf_dis.metrics.reid import reid_metrics

_DESCRIPTION = """CMC rank-1/5/10, mAP and mINP for re-identification, Market-1501 protocol: gallery items with the
query's identity and camera are ignored, distractors stay, queries without a valid match are skipped and counted."""

_KWARGS_DESCRIPTION = """
Args:
    distances: one row per query, the distance to every gallery item (smaller is more similar).
    query_pids: the query's identity.
    query_camids: the query's camera.
    gallery_pids: list of the gallery's identities (compute keyword).
    gallery_camids: list of the gallery's cameras (compute keyword).
Returns:
    rank1, rank5, rank10, mAP, mINP (fractions in [0, 1]), num_valid_queries, num_skipped_queries.
"""

_CITATION = """@inproceedings{zheng2015scalable,
  title={Scalable Person Re-identification: A Benchmark}, author={Zheng, Liang and Shen, Liyue and Tian, Lu and
  Wang, Shengjin and Wang, Jingdong and Tian, Qi}, booktitle={ICCV}, year={2015}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Reid(evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            datasets.Features(
                {
                    "distances": datasets.Sequence(datasets.Value("float64")),
                    "query_pids": datasets.Value("int64"),
                    "query_camids": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, distances, query_pids, query_camids, gallery_pids, gallery_camids):
        metrics = reid_metrics(
            np.asarray(distances, dtype=np.float64),
            np.asarray(query_pids),
            np.asarray(gallery_pids),
            np.asarray(query_camids),
            np.asarray(gallery_camids),
        )
        return {name: float(value) if "queries" not in name else int(value) for name, value in metrics.items()}
