"""Market-1501 person re-identification (Zheng et al. 2015) as `DatasetDict(train, query, gallery)`.

Reads the standard release layout: `bounding_box_train`, `query` and `bounding_box_test` folders of JPEG crops named
`PPPP_cCsS_FFFFFF_BB.jpg` (person id, camera 1-6, sequence, frame, box). Columns: `image`, `pid` (the person id
of the file name), `camid` (0-based camera), `label` (training identities relabelled 0..N-1 in id order; -1 in
query and gallery, whose identities are not training classes). Junk boxes (pid -1) are dropped; distractors (pid 0)
stay in the gallery, as the evaluation protocol expects. Other files (the release's `Thumbs.db`, say) are ignored.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

RELEASE_FOLDER = "Market-1501-v15.09.15"
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
#: (images, identities) of the real release after dropping junk; the gallery's identities include distractor id 0.
EXPECTED_COUNTS = {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}
FILE_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
REID_FEATURES = Features({"image": Image(), "pid": Value("int64"), "camid": Value("int64"), "label": Value("int64")})


@dataclass(frozen=True)
class _Crop:
    path: str
    pid: int
    camid: int


def load_market1501(root: str | os.PathLike, *, skip_bad_files: bool = False, check_images: bool = True) -> DatasetDict:
    """Market-1501 from a local copy.

    Args:
        root: the extracted `Market-1501-v15.09.15` folder, or the folder that contains it.
        skip_bad_files: skip JPEG files with a malformed name or that cannot be read (saying how many) instead of
            raising.
        check_images: open every image's header once (fast, no decoding) so that an unreadable file fails here and
            not in the middle of training.

    Raises:
        FileNotFoundError: the split folders are missing.
        ValueError: malformed file names or unreadable images (the first offenders are listed), unless
            `skip_bad_files`.
    """
    base = _release_folder(Path(root))
    splits = {}
    for split, folder in SPLIT_FOLDERS.items():
        crops = _read_split(base / folder, skip_bad_files=skip_bad_files, check_images=check_images)
        if split == "train":
            label_of = {pid: label for label, pid in enumerate(sorted({crop.pid for crop in crops}))}
            labels = [label_of[crop.pid] for crop in crops]
        else:
            labels = [-1] * len(crops)
        splits[split] = datasets.Dataset.from_dict(
            {
                "image": [crop.path for crop in crops],
                "pid": [crop.pid for crop in crops],
                "camid": [crop.camid for crop in crops],
                "label": labels,
            },
            features=REID_FEATURES,
        )
    _warn_on_unexpected_counts(splits)
    return DatasetDict(splits)


def _release_folder(root: Path) -> Path:
    for candidate in (root, root / RELEASE_FOLDER):
        if all((candidate / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
            return candidate
    raise FileNotFoundError(
        f"no Market-1501 release in {str(root)!r}: expected the folders {sorted(SPLIT_FOLDERS.values())} in it or in "
        f"{RELEASE_FOLDER}/ below it. The dataset cannot be downloaded by this library: get it from its authors "
        "(Zheng et al., ICCV 2015) and pass the extracted folder."
    )


def _read_split(folder: Path, *, skip_bad_files: bool, check_images: bool) -> list[_Crop]:
    crops, malformed, unreadable = [], [], []
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".jpg")
    for path in tqdm(files, desc=f"Market-1501 {folder.name}", disable=not check_images or len(files) < 1000):
        match = FILE_NAME.match(path.name)
        if match is None or not 1 <= int(match.group(2)) <= 6:
            malformed.append(path.name)
            continue
        pid = int(match.group(1))
        if pid == -1:  # junk boxes: not used for training or evaluation
            continue
        if check_images and not _readable(path):
            unreadable.append(path.name)
            continue
        crops.append(_Crop(str(path), pid, int(match.group(2)) - 1))
    for problem, names in (("malformed file names", malformed), ("unreadable images", unreadable)):
        if not names:
            continue
        message = f"{folder}: {len(names)} {problem} (first: {names[:5]})"
        if not skip_bad_files:
            raise ValueError(f"{message}. Pass skip_bad_files=True to skip them.")
        warnings.warn(f"{message}; skipped.", stacklevel=3)
    return crops


def _readable(path: Path) -> bool:
    try:
        with PILImage.open(path) as image:
            image.verify()
        return True
    except (OSError, UnidentifiedImageError, SyntaxError):
        return False


def _warn_on_unexpected_counts(splits: dict[str, datasets.Dataset]) -> None:
    found = {split: (len(table), len(set(table["pid"]))) for split, table in splits.items()}
    if found != EXPECTED_COUNTS:
        warnings.warn(
            f"Market-1501 counts (images, identities) are {found}; the real release has {EXPECTED_COUNTS}. "
            "A partial or modified copy gives results that are not comparable with published ones.",
            stacklevel=3,
        )
