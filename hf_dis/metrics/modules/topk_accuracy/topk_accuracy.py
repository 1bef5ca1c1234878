"""`evaluate` module: top-1 and top-5 accuracy from logits. Load it offline with
`hf_dis.metrics.load("topk_accuracy")`."""

import datasets
import evaluate
import numpy as np

from hf_dis.metrics import metric_info
from hf_dis.metrics.accuracy import topk_accuracy

_DESCRIPTION = "Top-k accuracy: the fraction of examples whose label is among the k highest scores (k = 1 and 5)."

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row of class scores (logits) per example.
    references: the example's class id.
Returns:
    top1, top5: fractions in [0, 1].
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopkAccuracy(evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return topk_accuracy(np.asarray(predictions, dtype=np.float32), np.asarray(references))
