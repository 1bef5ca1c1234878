"""CIFAR-100 (Krizhevsky 2009) as a `DatasetDict(train, test)` with columns `image`, `label` (100 fine classes) and
`coarse_label` (20 superclasses), from the Hub or from a local copy in one of three formats.

Sources:
- None: the Hub dataset `uoft-cs/cifar100` (columns `img`, `fine_label`, `coarse_label`, renamed here).
- A local `cifar-100-python` folder (or its parent) as the authors distribute it: the pickled `train`, `test` and
  `meta` files, each image a row of 3,072 bytes (1,024 red, then green, then blue, row-major 32 x 32).
- A local parquet copy (`train-*.parquet` and `test-*.parquet` anywhere below the folder, as on the Hub), or an
  image folder (`train/<fine name>/*.png`, `test/<fine name>/*.png`).
"""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import datasets
import huggingface_hub
import numpy as np
from datasets import ClassLabel, DatasetDict, Features, Image

HUB_ID = "uoft-cs/cifar100"
# The superclass of each fine class (the dataset's own grouping), used to name and fill `coarse_label` when a copy
# (parquet without features, image folder) does not carry it.
SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
FINE_NAMES: tuple[str, ...] = tuple(sorted(name for names in SUPERCLASSES.values() for name in names))
COARSE_NAMES: tuple[str, ...] = tuple(sorted(SUPERCLASSES))
_COARSE_OF_FINE = {fine: COARSE_NAMES.index(coarse) for coarse, names in SUPERCLASSES.items() for fine in names}

FEATURES = Features(
    {
        "image": Image(),
        "label": ClassLabel(names=list(FINE_NAMES)),
        "coarse_label": ClassLabel(names=list(COARSE_NAMES)),
    }
)


def load_cifar100(source: str | os.PathLike | None = None) -> DatasetDict:
    """CIFAR-100 as `DatasetDict(train, test)`: `image` (PIL), `label` (fine `ClassLabel`), `coarse_label`.

    Args:
        source: None for the Hub (`uoft-cs/cifar100`), or a local folder: `cifar-100-python` (or its parent), a
            parquet copy, or an image folder (see the module docstring).

    Raises:
        FileNotFoundError: a local folder in none of the formats.
        ConnectionError: no source given and the Hub is unreachable (offline, or no network), naming the three
            ways to provide the data.
    """
    if source is None:
        return _from_hub()
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-100 source {str(root)!r} is not a folder. {_HOW_TO_PROVIDE}")
    pickles = _find_pickle_folder(root)
    if pickles is not None:
        return _from_pickles(pickles)
    parquet = {split: sorted(root.rglob(f"{split}-*.parquet")) for split in ("train", "test")}
    if all(parquet.values()):
        return _standardise(
            datasets.load_dataset("parquet", data_files={k: [str(p) for p in v] for k, v in parquet.items()})
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _from_image_folder(root)
    raise FileNotFoundError(f"no CIFAR-100 copy found in {str(root)!r}. {_HOW_TO_PROVIDE}")


_HOW_TO_PROVIDE = (
    "Provide CIFAR-100 in one of three ways: (1) online, from the Hub (load_cifar100() loads 'uoft-cs/cifar100'); "
    "(2) the original 'cifar-100-python' folder from https://www.cs.toronto.edu/~kriz/cifar.html (its train, test "
    "and meta files): load_cifar100('path/to/cifar-100-python'); (3) a parquet copy (train-*.parquet, "
    "test-*.parquet, e.g. the Hub repo's files) or an image folder (train/<class>/*.png, test/<class>/*.png): "
    "load_cifar100('path/to/folder')."
)


def _from_hub() -> DatasetDict:
    offline = datasets.config.HF_HUB_OFFLINE or huggingface_hub.constants.HF_HUB_OFFLINE
    if not offline and not _hub_reachable():
        # Checked first because datasets retries an unreachable Hub for about 25 s before giving up.
        raise ConnectionError(
            f"the Hugging Face Hub ({huggingface_hub.constants.ENDPOINT}) is unreachable. {_HOW_TO_PROVIDE}"
        )
    try:
        return _standardise(datasets.load_dataset(HUB_ID))
    except (ConnectionError, OSError) as error:  # offline with no cached copy
        raise ConnectionError(
            f"cannot load {HUB_ID!r} from the Hub or its cache ({error}). {_HOW_TO_PROVIDE}"
        ) from error


def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _find_pickle_folder(root: Path) -> Path | None:
    for folder in (root, root / "cifar-100-python"):
        if all((folder / name).is_file() for name in ("train", "test", "meta")):
            return folder
    return None


def _unpickle(path: Path) -> dict[str, object]:
    """The authors' files are Python 2 pickles: str keys under latin1 (bytes keys if re-pickled from Python 3)."""
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError) as error:
        raise ValueError(
            f"{path} is not a whole CIFAR-100 pickle ({type(error).__name__}: {error}): download and extract "
            "cifar-100-python.tar.gz again."
        ) from error
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in content.items()}


def _from_pickles(folder: Path) -> DatasetDict:
    meta = _unpickle(folder / "meta")
    fine_names = [_text(name) for name in meta["fine_label_names"]]
    coarse_names = [_text(name) for name in meta["coarse_label_names"]]
    features = Features(
        {"image": Image(), "label": ClassLabel(names=fine_names), "coarse_label": ClassLabel(names=coarse_names)}
    )
    splits = {}
    for split in ("train", "test"):
        content = _unpickle(folder / split)
        pixels = np.asarray(content["data"], dtype=np.uint8)
        if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{folder / split}: 'data' must be [N, 3072] uint8 rows, got shape {pixels.shape}.")
        images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are channel-major: R, G, B planes
        for key in ("fine_labels", "coarse_labels"):
            if key not in content or len(content[key]) != len(images):
                found = "none" if key not in content else f"{len(content[key]):,}"
                raise ValueError(
                    f"{folder / split}: {len(images):,} images but {found} {key}: the file is damaged or not "
                    "CIFAR-100's (extract the archive again)."
                )
        splits[split] = datasets.Dataset.from_dict(
            {"image": list(images), "label": content["fine_labels"], "coarse_label": content["coarse_labels"]},
            features=features,
        )
    return DatasetDict(splits)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _from_image_folder(root: Path) -> DatasetDict:
    loaded = datasets.load_dataset("imagefolder", data_dir=str(root))
    names = loaded["train"].features["label"].names
    unknown = sorted(set(names) - set(FINE_NAMES))
    if unknown:
        raise ValueError(f"{root}: class folders {unknown[:5]} are not CIFAR-100 fine class names.")

    def to_cifar(batch):
        fine = [names[label] for label in batch["label"]]
        return {"label": [FINE_NAMES.index(n) for n in fine], "coarse_label": [_COARSE_OF_FINE[n] for n in fine]}

    return DatasetDict({split: table.map(to_cifar, batched=True, features=FEATURES) for split, table in loaded.items()})


def _standardise(loaded: DatasetDict) -> DatasetDict:
    """Hub / parquet layout (img, fine_label, coarse_label) to (image, label, coarse_label) with class names."""
    result = {}
    for split in ("train", "test"):
        table = loaded[split]
        renames = {old: new for old, new in (("img", "image"), ("fine_label", "label")) if old in table.column_names}
        table = table.rename_columns(renames).select_columns(["image", "label", "coarse_label"])
        if table.features != FEATURES and not _same_class_labels(table.features):
            table = table.cast(FEATURES)  # plain integer columns: name the classes
        result[split] = table
    return DatasetDict(result)


def _same_class_labels(features: Features) -> bool:
    return all(isinstance(features[name], ClassLabel) for name in ("label", "coarse_label"))
