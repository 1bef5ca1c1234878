"""Teacher cache: run the teacher once over a dataset and keep what distillation needs as `datasets` columns next to
the data, so that training reads the teacher's logits instead of running the teacher.

Per example, the cache holds the teacher's top-R classes and their logits (`teacher_top_classes`,
`teacher_top_logits`), one value for all the other classes (`teacher_tail_logit`: the log of their mean exp(logit),
so that the tail keeps its total probability at temperature 1), and, for a teacher whose outputs have `embeddings`
(`hf_dis.models.ReIDModel`), its embedding (`teacher_embeddings`). A training batch's columns are read as
`hf_dis.data.cached_logits.CachedTeacherLogits` (the teacher's values on sampled classes without `[B, C]` logits);
`dense_teacher_logits` rebuilds `[B, C]` logits from them: exact with R = C; with R < C the tail classes share one
logit **[choice]**, which keeps the ranks DIS draws from (the top R are exact) and the teacher's mass outside them,
but not how that mass spreads. The top classes are stored in descending order of logit, so a sampler reads the
teacher's ranking from them (`ClassSampler.sample(..., ranked_classes=)`) instead of selecting it again from the
rebuilt logits.

Which image the teacher saw, two ways:
- **one view** (default): the image as `transform` makes it, once. Use the evaluation transform: the student then
  trains on augmented images against the teacher's view of the clean image (the usual trade of offline
  distillation).
- **V seeded augmented views** (`num_views=V`, `transform` = the training augmentation): view v of row i is
  `transform` run with its random generators seeded by `view_seed(seed, i, v)`; the seeds are stored with the row
  (`teacher_view_seeds`), so shuffling or selecting rows later keeps them right. `labelled_batches` then draws one
  of the V views for each example each time it is read, remakes exactly that augmented image for the student and
  hands over that view's logits: teacher and student see the same pixels, and the augmentation is limited to those
  V draws per image **[choice]** (V = 1 is an augmented image fixed for the whole training).

Each row also keeps a hash of its image as stored (`teacher_image_hash`), so that the trainer can refuse cache
columns joined onto other rows (`check_cached_rows`).

`DistillationTrainer` uses the cached columns whenever a training batch carries them, and needs no teacher at all
when the training set carries them: the cache also records which teacher made it (name, architecture, parameters,
its number of classes and their names, R, views, seed, the transform) in the dataset's `info.description` (a JSON
line; it survives `map`, `select`, `shuffle` and `save_to_disk`), which `teacher_cache_info` reads back: the trainer
refuses a cache whose classes are not the student's, and the model card names the teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pyarrow
import pyarrow.compute as pc
import torch
from torch import nn

from hf_dis.models.class_names import agreed_class_names, dataset_class_names, model_class_names
from hf_dis.models.describe import describe, num_parameters

TOP_CLASSES, TOP_LOGITS, TAIL_LOGIT = "teacher_top_classes", "teacher_top_logits", "teacher_tail_logit"
#: The columns a training batch carries to the trainer (one view per example).
TEACHER_CACHE_COLUMNS = (TOP_CLASSES, TOP_LOGITS, TAIL_LOGIT)
#: The teacher's embedding of each example, cached when its outputs have `embeddings` (re-ID models), for the
#: embedding-level distillation term of the re-ID trainer.
TEACHER_EMBEDDINGS = "teacher_embeddings"
#: Every cache column a training batch may carry: the logits' columns, and the embeddings when they were cached.
CARRIED_CACHE_COLUMNS = (*TEACHER_CACHE_COLUMNS, TEACHER_EMBEDDINGS)
#: Per row of a cache with augmented views: the seed of each view.
VIEW_SEEDS = "teacher_view_seeds"
#: Per row: a hash of the row's image as stored (its encoded bytes, or its path), so that the trainer can tell a row
#: whose cached logits were made for another image (cache columns joined onto the data in another order).
IMAGE_HASH = "teacher_image_hash"
#: The key of the cache's record in the dataset's `info.description`.
CACHE_INFO_KEY = "hf_dis_teacher_cache"


def view_seed(seed: int, index: int, view: int) -> int:
    """The seed of augmented view `view` of row `index` in a cache made with `seed` (well mixed, 63 bits)."""
    state = np.random.SeedSequence([seed, index, view]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def seeded_view(transform: Callable, image: Any, seed: int) -> torch.Tensor:
    """`transform(image)` with Python's, NumPy's and torch's (CPU) random generators seeded by `seed`: the same
    (image, seed) always gives the same augmented view. The generators' states are restored afterwards, so the rest
    of the program's randomness is untouched."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            return transform(image)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@torch.no_grad()
def image_hashes(dataset: datasets.Dataset, image_column: str) -> np.ndarray | None:
    """A 63-bit hash per row of `image_column` as stored, read without decoding: an `Image` column's encoded bytes
    (read from its file when it holds a path: `save_to_disk` embeds them), a binary or string column's values; None
    for a column of another kind."""
    column = dataset.with_format("arrow")[image_column]
    if pyarrow.types.is_struct(column.type) and {"bytes", "path"} <= {field.name for field in column.type}:
        stored = zip(pc.struct_field(column, "bytes").to_pylist(), pc.struct_field(column, "path").to_pylist())
        values = [data if data is not None else _file_bytes(path) for data, path in stored]
    elif pyarrow.types.is_binary(column.type) or pyarrow.types.is_large_binary(column.type):
        values = column.to_pylist()
    elif pyarrow.types.is_string(column.type) or pyarrow.types.is_large_string(column.type):
        values = [value.encode() for value in column.to_pylist()]
    else:
        return None
    digests = (hashlib.blake2b(value or b"", digest_size=8).digest() for value in values)
    return np.fromiter((int.from_bytes(digest, "little") >> 1 for digest in digests), dtype=np.int64, count=len(values))


def _file_bytes(path: str | None) -> bytes:
    """The bytes of the image file at `path`; the path itself where there is no such file."""
    if path and os.path.isfile(path):
        with open(path, "rb") as handle:
            return handle.read()
    return (path or "").encode()


def check_cached_rows(dataset: datasets.Dataset) -> None:
    """Every row's image is the one its cached logits were made for (`IMAGE_HASH`, compared with the images as
    stored: no decoding); a cache without the column (made before it existed) is not checked.

    Raises:
        ValueError: naming the first row that differs and how many do.
    """
    info = teacher_cache_info(dataset) or {}
    image_column = info.get("image_column", "image")
    if IMAGE_HASH not in dataset.column_names or image_column not in dataset.column_names:
        return
    now = image_hashes(dataset, image_column)
    if now is None:
        return
    different = np.flatnonzero(dataset.with_format("arrow")[IMAGE_HASH].to_numpy() != now)
    if len(different):
        raise ValueError(
            f"row {different[0]}'s image is not the one its cached teacher logits were made for ({len(different):,} "
            f"of {len(dataset):,} rows differ): the cache's columns were joined onto other rows, or the data was "
            "reordered. Train on the cached dataset's own rows, or cache the teacher on these (hf-dis cache-teacher)."
        )


def cache_teacher_logits(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    transform: Callable,
    *,
    top_r: int,
    batch_size: int = 256,
    image_column: str = "image",
    device: str | torch.device | None = None,
    num_views: int | None = None,
    seed: int = 0,
    record: dict[str, Any] | None = None,
) -> datasets.Dataset:
    """`dataset` with the cache columns (the teacher in eval mode, on `device`, default its own).

    Args:
        teacher: a classifier returning `[B, C]` logits (a tensor or an output with `.logits`).
        transform: image -> `[3, H, W]` tensor, as the student's inputs are made: the evaluation transform for one
            view, the training augmentation with `num_views`.
        top_r: R, classes kept exactly per example (at least the DIS sampler's rank limit to draw as from the live
            teacher); R = C keeps everything.
        batch_size: rows per teacher forward (times `num_views` images with views).
        num_views: V seeded augmented views per row (columns `[V, R]`, `[V, R]`, `[V]` and `teacher_view_seeds`);
            None: one view, `transform` applied as it is (columns `[R]`, `[R]`, scalar).
        seed: the views' seed (see `view_seed`).
        record: more facts (JSON values) to keep in the cache's record, e.g. how `transform` was made.
    """
    if top_r < 1:
        raise ValueError(f"top_r must be >= 1, got {top_r}.")
    if num_views is not None and num_views < 1:
        raise ValueError(f"num_views must be >= 1 (or None for one un-augmented view), got {num_views}.")
    # the cached logits are indexed by the teacher's classes, the rows' labels by the data's: the same, in order
    data_names = dataset_class_names(dataset, ("label",))
    if data_names is not None:
        agreed_class_names({"teacher": model_class_names(teacher, len(data_names)), "dataset": data_names})
    if len(dataset) == 0:
        raise ValueError("the dataset to cache the teacher's logits for is empty.")
    teacher = teacher.eval()
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    teacher.to(device)
    views = num_views or 1
    hashes = image_hashes(dataset, image_column)
    first = teacher(seeded_view(transform, dataset[0][image_column], seed).unsqueeze(0).to(device))  # C, first
    num_classes = (first if isinstance(first, torch.Tensor) else first.logits).shape[1]
    first_embeddings = getattr(first, "embeddings", None)  # re-ID teachers: what retrieval ranks by
    if top_r > num_classes:
        raise ValueError(f"top_r={top_r} is more than the teacher's {num_classes} classes.")

    def add_columns(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if num_views is None:
            pixels = [transform(image) for image in batch[image_column]]
        else:
            seeds = [[view_seed(seed, index, view) for view in range(views)] for index in indices]
            pixels = [
                seeded_view(transform, image, s)
                for image, row in zip(batch[image_column], seeds, strict=True)
                for s in row
            ]
        outputs = teacher(torch.stack(pixels).to(device))
        logits = (outputs if isinstance(outputs, torch.Tensor) else outputs.logits).float()
        top = logits.topk(top_r, dim=1)
        tail = logits.scatter(1, top.indices, float("-inf"))
        if top_r < num_classes:
            tail_logit = torch.logsumexp(tail, dim=1) - math.log(num_classes - top_r)
        else:
            tail_logit = torch.full((logits.shape[0],), float("-inf"), device=device)
        columns = {TOP_CLASSES: top.indices.int(), TOP_LOGITS: top.values, TAIL_LOGIT: tail_logit}
        if first_embeddings is not None:
            columns[TEACHER_EMBEDDINGS] = outputs.embeddings.float()
        identity = {} if hashes is None else {IMAGE_HASH: hashes[indices].tolist()}
        if num_views is None:
            return {**{key: value.cpu().tolist() for key, value in columns.items()}, **identity}
        rows = {key: value.unflatten(0, (-1, views)).cpu().tolist() for key, value in columns.items()}
        return {**rows, VIEW_SEEDS: seeds, **identity}

    def per_view(feature: datasets.Value | datasets.Sequence) -> datasets.Value | datasets.Sequence:
        return feature if num_views is None else datasets.Sequence(feature, length=views)

    features = dataset.features.copy()
    features[TOP_CLASSES] = per_view(datasets.Sequence(datasets.Value("int32"), length=top_r))
    features[TOP_LOGITS] = per_view(datasets.Sequence(datasets.Value("float32"), length=top_r))
    features[TAIL_LOGIT] = per_view(datasets.Value("float32"))
    if first_embeddings is not None:
        width = first_embeddings.shape[-1]
        features[TEACHER_EMBEDDINGS] = per_view(datasets.Sequence(datasets.Value("float32"), length=width))
    if num_views is not None:
        features[VIEW_SEEDS] = datasets.Sequence(datasets.Value("int64"), length=views)
    if hashes is not None:
        features[IMAGE_HASH] = datasets.Value("int64")
    what = "the teacher's logits" if num_views is None else f"the teacher's logits on {views} augmented views"
    cached = dataset.map(
        add_columns, with_indices=True, batched=True, batch_size=batch_size, features=features, desc=f"Caching {what}"
    )
    record = {
        "teacher": getattr(teacher, "name_or_path", None) or describe(teacher),
        "architecture": describe(teacher),
        "parameters": num_parameters(teacher),
        "num_classes": num_classes,
        "class_names": model_class_names(teacher, num_classes) or data_names,
        "transform": repr(transform),
        "top_r": top_r,
        "num_views": num_views,
        "embedding_size": None if first_embeddings is None else first_embeddings.shape[-1],
        "seed": seed if num_views is not None else None,
        "image_column": image_column,
        **(record or {}),
    }
    description = cached.info.description or ""
    cached.info.description = (description + "\n" if description else "") + json.dumps({CACHE_INFO_KEY: record})
    return cached


def teacher_cache_info(dataset: datasets.Dataset) -> dict[str, Any] | None:
    """What `cache_teacher_logits` recorded about the teacher and the cache (teacher, architecture, parameters,
    num_classes, class_names, transform, top_r, num_views, seed; caches made before num_classes was recorded lack
    the first three), or None for a dataset it did not make."""
    for line in reversed((dataset.info.description or "").splitlines()):
        if CACHE_INFO_KEY in line:
            try:
                return json.loads(line)[CACHE_INFO_KEY]
            except (json.JSONDecodeError, KeyError, TypeError):
                return None
    return None


def read_cached_views(batch: dict[str, list], transform: Callable, image_column: str = "image") -> dict[str, list]:
    """`pixel_values` and the cache columns of a batch of rows from a cache with augmented views: for each row one
    of its V views, drawn with torch's random generator (so seeded like the rest of the data pipeline), the image
    remade with that view's seed and `transform` (the augmentation the cache was made with), and that view's
    logits."""
    carried = [key for key in CARRIED_CACHE_COLUMNS if key in batch]
    out: dict[str, list] = {"pixel_values": [], **{key: [] for key in carried}}
    for row, image in enumerate(batch[image_column]):
        seeds = batch[VIEW_SEEDS][row]
        view = int(torch.randint(len(seeds), ()))
        out["pixel_values"].append(seeded_view(transform, image, int(seeds[view])))
        for key in carried:
            out[key].append(batch[key][row][view])
    return out
