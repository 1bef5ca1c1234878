"""Re-ID data plumbing: the evaluation set (query and gallery in one dataset, queries
marked by a column) whose batches carry what `hf_dis.metrics.reid_eval_metrics` needs.

Training batches are the usual `pixel_values` / `labels` (`labelled_batches` on the `label` column of
`load_market1501` or `load_glyphs(protocol="reid")`), drawn P x K by `IdentitySampler`, with the BoT augmentation
(`padded_crop_transform` at 256 x 128 with random erasing).
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np

from hf_dis.data.transforms import transform_images

#: Columns an evaluation batch carries besides pixel_values; `reid_eval_metrics` reads them in this order.
REID_EVAL_KEYS = ("pid", "camid", "is_query")


def reid_eval_dataset(query: datasets.Dataset, gallery: datasets.Dataset) -> datasets.Dataset:
    """Query and gallery as one dataset with an `is_query` column (queries first), for `Trainer.evaluate`."""
    for name, split in (("query", query), ("gallery", gallery)):
        missing = {"image", "pid", "camid"} - set(split.column_names)
        if missing:
            raise ValueError(f"the {name} split lacks the columns {sorted(missing)} (has {split.column_names}).")
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty.")
    query = query.add_column("is_query", np.ones(len(query), dtype=bool))
    gallery = gallery.add_column("is_query", np.zeros(len(gallery), dtype=bool))
    return datasets.concatenate_datasets([query, gallery])


def reid_eval_batches(transform: Callable, image_column: str = "image") -> Callable[[dict[str, list]], dict[str, list]]:
    """A function for `Dataset.with_transform` on `reid_eval_dataset`: `pixel_values`, `pid`, `camid`, `is_query`."""

    def apply(batch: dict[str, list]) -> dict[str, list]:
        out = {"pixel_values": transform_images(transform, batch[image_column])}
        out.update({key: batch[key] for key in REID_EVAL_KEYS})
        return out

    return apply
