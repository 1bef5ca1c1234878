"""Any image classification dataset a user names: a Hub id, a local image folder (one sub-folder per class, read by
`datasets`' `imagefolder`) or a dataset saved with `save_to_disk`, with its evaluation split found or made."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

#: Split names taken as the evaluation split, in this order.
EVALUATION_SPLITS = ("test", "validation", "valid", "val", "eval")


def load_image_dataset(name_or_path: str, *, eval_fraction: float = 0.1, seed: int = 0) -> datasets.DatasetDict:
    """`DatasetDict(train, test)` from `name_or_path`: a folder saved with `save_to_disk`, a local image folder, or a
    Hub id. Its evaluation split is the first of `EVALUATION_SPLITS` it has; without one, `eval_fraction` of the
    training images (seeded, stratified by label where there is a `ClassLabel` column) become the test split.

    Raises:
        ValueError: nothing loadable at `name_or_path`, or no `train` split; the message says what was found.
    """
    path = Path(os.path.expanduser(name_or_path))
    if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    elif path.is_dir():
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
    elif name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise ValueError(f"{name_or_path} is not a folder: name an image folder, a saved dataset, or a Hub id.")
    else:
        try:
            loaded = datasets.load_dataset(name_or_path)
        except (ConnectionError, OSError, FileNotFoundError) as error:
            raise ValueError(
                f"cannot load the dataset {name_or_path!r} ({type(error).__name__}: {error}). Offline, pass a local "
                "image folder or a dataset saved with save_to_disk instead."
            ) from error
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if "train" not in loaded:
        raise ValueError(f"{name_or_path} has no 'train' split (it has {sorted(loaded)}).")
    evaluation = next((name for name in EVALUATION_SPLITS if name in loaded), None)
    if evaluation is not None:
        return datasets.DatasetDict({"train": loaded["train"], "test": loaded[evaluation]})
    label = next((name for name, feature in loaded["train"].features.items()
                  if isinstance(feature, datasets.ClassLabel)), None)  # fmt: skip
    split = loaded["train"].train_test_split(test_size=eval_fraction, seed=seed, stratify_by_column=label)
    return datasets.DatasetDict({"train": split["train"], "test": split["test"]})
