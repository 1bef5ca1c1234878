"""A real many-class image task that always runs: characters rendered in the fonts of this machine, split by font.

Like Chars74K and the handwritten-Chinese benchmarks, a class is a character and its examples are its renderings in
different fonts; a model must recognise the character in a font family it never saw. Two protocols:

- ``classification``: `DatasetDict(train, test)`, columns `image` (grey PIL), `label` (`ClassLabel` whose names are
  the characters), `font` (face name). Train and test use disjoint font **families** (every class has at least one
  face on each side).
- ``reid``: Market-1501's protocol on glyphs. Disjoint identity (character) sets for train and test; fonts are the
  cameras. `DatasetDict(train, query, gallery)` with the columns of `load_market1501`: `image`, `pid` (the code
  point), `camid` (the face), `label` (train identities relabelled 0..N-1, -1 elsewhere). Query: the first rendering
  of each test identity in each face; gallery: the other renderings. Retrieval across cameras is what counts (the
  protocol ignores same-camera matches).

Rendering is deterministic (each image's randomness is seeded by the seed, the code point, the face and the copy),
with light augmentation (scale, rotation, shift), and the result is cached on disk as a `datasets` dataset keyed by
the parameters and the font files: a second call loads it instantly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from tqdm.auto import tqdm

from hf_dis.data.fonts import Face, coverage_by_face, discover_faces
from hf_dis.data.market1501 import REID_FEATURES

logger = logging.getLogger(__name__)

Protocol = Literal["classification", "reid"]

#: Named sets of faces (`Face.name`), one face per font family, each with the Debian package that installs it.
#: ``cjk-20k``: the largest task this project can render from Debian's fonts: 16 families that each draw most of the
#: 20,992 CJK Unified Ideographs (U+4E00-U+9FFF); with min_faces=10, 20,902 of them are drawn by 10 faces or more.
#: Brush and handwriting designs (SetoFont, LXGW WenKai) are among them.
FACE_SETS: dict[str, dict[str, str]] = {
    "cjk-20k": {
        "AR PL UKai CN": "fonts-arphic-ukai",
        "AR PL UMing CN": "fonts-arphic-uming",
        "BabelStone Han": "fonts-babelstone-han",
        "Droid Sans Fallback": "fonts-droid-fallback",
        "HanaMinA Regular": "fonts-hanazono",
        "IPAmjMincho": "fonts-ipamj-mincho",
        "LXGW WenKai": "fonts-lxgw-wenkai",
        "Noto Sans CJK SC": "fonts-noto-cjk",
        "Noto Serif CJK SC": "fonts-noto-cjk",
        "SetoFont": "fonts-seto",
        "TW-Kai": "fonts-cns11643-kai",
        "Unifont": "fonts-unifont",
        "WenQuanYi Zen Hei": "fonts-wqy-zenhei",
        "cwTeXHeiBold": "fonts-cwtex-heib",
        "cwTeXKai": "fonts-cwtex-kai",
        "cwTeXMing": "fonts-cwtex-ming",
    }
}
#: ``cjk-100k``: every separate design among the 31 CJK font packages (one face each; several faces where one design
#: is split over files by Unicode block, as HanaMin A and B), for the per-class split (`split="per_class"`): about
#: 95,000 characters (Han of every block, Hangul, kana) drawn by 2 families or more. Near-copies of one design are
#: left out (WenQuanYi Micro Hei is Droid Sans Fallback's design; AR PL KaitiM / SungtiL / Mingti2L are UKai's and
#: UMing's sources; regional variants of one family).
FACE_SETS["cjk-100k"] = {
    **FACE_SETS["cjk-20k"],
    "AR PL UKai TW": "fonts-arphic-ukai",
    "AR PL UMing TW": "fonts-arphic-uming",
    "HanaMinB Regular": "fonts-hanazono",
    "SetoFont-ex": "fonts-seto",
    "TW-Kai-Ext-B": "fonts-cns11643-kai",
    "TW-Kai-Plus": "fonts-cns11643-kai",
    "Unifont Upper": "fonts-unifont",
    "cwTeXFangSong": "fonts-cwtex-fs",
    "IPAGothic": "fonts-ipafont-gothic",
    "BIZ UDMincho": "fonts-morisawa-bizud-mincho",
    "Smiley Sans Oblique": "fonts-smiley-sans",
    "kiloji": "fonts-kiloji",
    "KouzanBrushFont": "fonts-kouzan-mouhitsu",
    "AoyagiSosekiFont2": "fonts-aoyagi-soseki",
    "NanumGothic": "fonts-nanum",
    "NanumMyeongjo": "fonts-nanum",
    "Un Batang": "fonts-unfonts-core",
    "Un Dotum": "fonts-unfonts-core",
    "Un Pilgi": "fonts-unfonts-core",
    "Baekmuk Batang": "fonts-baekmuk",
    "Baekmuk Gulim": "fonts-baekmuk",
}
#: Faces that are one design with another face (one family split over files, or a regional variant): the family a
#: face counts in, where its own name table says otherwise. Splits and class counts are by these families.
DESIGN_FAMILIES: dict[str, str] = {
    "AR PL UKai TW": "AR PL UKai CN",
    "AR PL UMing TW": "AR PL UMing CN",
    "HanaMinB Regular": "HanaMinA",
    "SetoFont-ex": "SetoFont",
    "TW-Kai-Ext-B": "TW Kai",
    "TW-Kai-Plus": "TW Kai",
    "Unifont Upper": "Unifont",
}
CHARSETS = ("gb2312-level1", "gb2312")
Split = Literal["families", "per_class", "per_class_seen"]
_FORMAT_VERSION = 2  # bump when rendering changes, so that old caches are not reused


def default_cache_dir() -> Path:
    """`$HF_DIS_CACHE`, else `~/.cache/huggingface/hf_dis` (beside the datasets cache)."""
    return Path(os.environ.get("HF_DIS_CACHE") or Path(datasets.config.HF_CACHE_HOME) / "hf_dis")


def charset_code_points(charset: str) -> list[int]:
    """The characters of a named set: ``gb2312-level1`` (3,755 common hanzi) or ``gb2312`` (all 6,763 hanzi)."""
    if charset not in CHARSETS:
        raise ValueError(f"Unknown charset {charset!r}; choose one of {list(CHARSETS)}.")
    last_row = 0xD7 if charset == "gb2312-level1" else 0xF7
    code_points = []
    for high in range(0xB0, last_row + 1):  # GB2312 rows 16-55 (level 1) and 56-87 (level 2) hold the hanzi
        for low in range(0xA1, 0xFF):
            try:
                code_points.append(ord(bytes((high, low)).decode("gb2312")))
            except UnicodeDecodeError:
                continue
    return code_points


def load_glyphs(
    num_classes: int | None = None,
    *,
    protocol: Protocol = "classification",
    charset: str | None = None,
    min_faces: int = 5,
    test_fraction: float = 0.25,
    image_size: int = 32,
    copies: int = 2,
    augment: bool = True,
    seed: int = 0,
    include_system_fonts: bool = False,
    families: Sequence[str] | None = None,
    faces: Sequence[str] | str | None = None,
    split: Split = "families",
    max_train_families: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Render a glyph task from the fonts of this machine (see the module docstring).

    Args:
        num_classes: how many characters (identities, for ``reid``); None: every character that qualifies. The
            classes kept are those drawn by the most faces (ties: lower code point first).
        protocol: ``classification`` or ``reid``.
        charset: restrict the characters to a named set (``gb2312-level1``, ``gb2312``); None: any character.
        min_faces: a character qualifies when at least this many faces really draw it.
        test_fraction: classification: the share of font families held out for test (at least one);
            reid: the share of identities held out for query / gallery.
        image_size: side of the square grey images.
        copies: renderings per (character, face); the reid protocol needs at least 2 (query and gallery).
        augment: light random scale, rotation and shift per rendering (seeded).
        seed: seeds the renderings and the reid identity split.
        include_system_fonts: use the system's fonts besides matplotlib's bundled ones (needed for CJK tasks and the
            named face sets). Off by default, as `--glyph_system_fonts` is: the default task (matplotlib's fonts) is
            the same on every machine.
        families: use only the faces of these font families (names as `Face.family` gives them: style words
            removed, e.g. ``"DejaVu Sans"``, ``"TW Kai"``); None: every face found. Naming the families makes the task
            the same on every machine that has them, and keeps near-copies of one design (a font and its
            proportional variant) out of the train / test split.
        faces: use only these faces (names as `Face.name` gives them, e.g. ``"Noto Sans CJK SC"``), or the name of
            a set in `FACE_SETS` (e.g. ``"cjk-20k"``): one face of a family with many near-identical faces (weights,
            regional variants). Missing faces are an error that names their Debian packages.
        split: classification: ``families`` holds out the same font families for every class (`test_fraction` of
            them); ``per_class`` holds out one family per class, drawn among the families that draw it (seeded by
            `seed` and the code point), so that a character drawn by only 2 families still makes a class: one family
            trains, the other tests. With ``per_class``, `min_faces` counts families, and the test image is one
            rendering (copy 0) in the held-out family. ``per_class_seen``: the same classes and families, with the
            held-out family trained on too, and the test image a new rendering (copy `copies`: its own scale,
            rotation and shift) in it: every test glyph's design is seen in training, only not that image (needs
            `augment`).
        max_train_families: ``per_class`` and ``per_class_seen``: train on at most this many of each class's other
            families (drawn with the same seed); None: all of them.
        cache_dir: where coverage and rendered tasks are cached; default `default_cache_dir()`.

    Raises:
        ValueError: fewer qualifying characters than `num_classes` (the message says how many there are and which
            fonts would add more), or bad arguments.
    """
    if protocol not in ("classification", "reid"):
        raise ValueError(f"protocol must be 'classification' or 'reid', got {protocol!r}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if copies < (2 if protocol == "reid" else 1):
        raise ValueError(f"copies must be >= {2 if protocol == 'reid' else 1} for protocol {protocol!r}, got {copies}.")
    per_class = split in ("per_class", "per_class_seen")
    if split not in ("families", "per_class", "per_class_seen") or (per_class and protocol != "classification"):
        raise ValueError(
            f"split must be 'families', 'per_class' or 'per_class_seen' (the last two classification only), got "
            f"{split!r}."
        )
    if per_class and min_faces < 2:
        raise ValueError(f"split={split!r} needs min_faces >= 2 (a training and a test family), got {min_faces}.")
    if split == "per_class_seen" and not augment:
        raise ValueError("split='per_class_seen' needs augment=True: its test image would be a training image.")
    if max_train_families is not None and (not per_class or max_train_families < 1):
        raise ValueError(f"max_train_families is an option of the per-class splits (>= 1), got {max_train_families}.")
    if min_faces < 1 or image_size < 8:
        raise ValueError(f"min_faces must be >= 1 and image_size >= 8, got {min_faces} and {image_size}.")
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = discover_faces(include_system=include_system_fonts)
    if families is not None:
        found = faces_of_families(found, families)
    if faces is not None:
        try:
            found = faces_named(found, faces)
        except ValueError as error:
            if include_system_fonts:
                raise
            raise ValueError(f"{error} (only matplotlib's fonts were searched: pass include_system_fonts=True, "
                             "--glyph_system_fonts true on the command line)") from None  # fmt: skip
    faces = found
    params = {
        "num_classes": num_classes, "protocol": protocol, "charset": charset, "min_faces": min_faces,
        "test_fraction": test_fraction, "image_size": image_size, "copies": copies, "augment": augment, "seed": seed,
        "fonts": [face.fingerprint for face in faces], "version": _FORMAT_VERSION,
    }  # fmt: skip
    if per_class:  # only then: the keys of tasks rendered before the option existed stay valid
        params.update(split=split, max_train_families=max_train_families, families=[face.family for face in faces])
    task_dir = cache_root / "glyphs" / hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    if (task_dir / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(task_dir))

    coverage = coverage_by_face(faces, cache_root)
    allowed = set(charset_code_points(charset)) if charset is not None else None
    if per_class:
        task = _per_class_task(faces, coverage, allowed, num_classes, min_faces, max_train_families, params)
    elif protocol == "classification":
        task = _classification_task(faces, coverage, allowed, num_classes, min_faces, test_fraction, params)
    else:
        task = _reid_task(faces, coverage, allowed, num_classes, min_faces, test_fraction, params)
    # Written beside, then renamed: an interrupted run never leaves a half-written task that a later call would load.
    partial = task_dir.with_name(f"{task_dir.name}.partial-{os.getpid()}")
    task.save_to_disk(str(partial))
    if (task_dir / "dataset_dict.json").is_file():  # another process finished first: keep its copy
        shutil.rmtree(partial)
    else:
        shutil.rmtree(task_dir, ignore_errors=True)
        os.replace(partial, task_dir)
    return datasets.load_from_disk(str(task_dir))  # memory-mapped, like every later load


def faces_of_families(faces: list[Face], families: Sequence[str]) -> list[Face]:
    """The faces of the named families; a ValueError names any family that is not among `faces`."""
    wanted = set(families)
    if not wanted:
        raise ValueError("families is empty: name the font families to use, or pass None for every face.")
    missing = sorted(wanted - {face.family for face in faces})
    if missing:
        found = sorted({face.family for face in faces})
        raise ValueError(f"font families not found on this machine: {missing}. Found: {found}.")
    return [face for face in faces if face.family in wanted]


def faces_named(faces: list[Face], names: Sequence[str] | str) -> list[Face]:
    """The faces called `names` (or those of the set `FACE_SETS[names]`), in `faces`' order; a ValueError names the
    missing ones and, where known, the Debian packages and the apt command that install them."""
    if isinstance(names, str):
        if names not in FACE_SETS:
            raise ValueError(f"Unknown face set {names!r}; choose one of {sorted(FACE_SETS)}, or name the faces.")
        names = list(FACE_SETS[names])
    if not names:
        raise ValueError("faces is empty: name the faces to use, or pass None for every face.")
    missing = sorted(set(names) - {face.name for face in faces})
    if missing:
        package_of = {name: package for face_set in FACE_SETS.values() for name, package in face_set.items()}
        packages = sorted({package_of[name] for name in missing if name in package_of})
        hint = f" Install them with: apt-get install {' '.join(packages)}" if packages else ""
        raise ValueError(f"font faces not found on this machine: {missing}.{hint}")
    wanted = set(names)
    return [
        dataclasses.replace(face, family=DESIGN_FAMILIES.get(face.name, face.family))
        for face in faces
        if face.name in wanted
    ]


def _faces_drawing(faces: Iterable[Face], coverage: dict[Face, frozenset[int]], allowed: set[int] | None):
    counts: dict[int, int] = {}
    for face in faces:
        for code_point in coverage[face]:
            if allowed is None or code_point in allowed:
                counts[code_point] = counts.get(code_point, 0) + 1
    return counts


def _choose(counts: dict[int, int], eligible: set[int], num_classes: int | None, faces: list[Face]) -> list[int]:
    ranked = sorted(eligible, key=lambda cp: (-counts[cp], cp))
    if num_classes is not None:
        if num_classes > len(ranked):
            families = sorted({face.family for face in faces})
            present = {face.name for face in faces}
            missing = sorted({package for name, package in FACE_SETS["cjk-100k"].items() if name not in present})
            more = (
                f"install more fonts: apt-get install {' '.join(missing)} (with --glyph_faces cjk-100k "
                "--glyph_split per_class --glyph_min_faces 2 they draw about 109,000 characters)"
                if missing
                else "every font of the cjk-100k set is already used here"
            )
            raise ValueError(
                f"only {len(ranked):,} characters qualify with these fonts (families: {families}); asked for "
                f"{num_classes:,}. Lower min_faces, or {more}."
            )
        ranked = ranked[:num_classes]
    return sorted(ranked)


def _split_families(faces: list[Face], coverage, allowed, test_fraction: float) -> set[str]:
    """Test families: from the families that draw any allowed character, ordered by how many such faces they have
    (then by name), every k-th one starting from the second (k = round(1 / test_fraction)): the largest family
    always trains."""
    relevant: dict[str, int] = {}
    for face in faces:
        if any(allowed is None or cp in allowed for cp in coverage[face]):
            relevant[face.family] = relevant.get(face.family, 0) + 1
    ordered = sorted(relevant, key=lambda family: (-relevant[family], family))
    if len(ordered) < 2:
        raise ValueError(f"a font-disjoint split needs at least 2 font families; found {ordered}.")
    step = max(2, round(1 / test_fraction))
    return set(ordered[1::step])


def _classification_task(faces, coverage, allowed, num_classes, min_faces, test_fraction, params) -> DatasetDict:
    test_families = _split_families(faces, coverage, allowed, test_fraction)
    train_faces = [face for face in faces if face.family not in test_families]
    test_faces = [face for face in faces if face.family in test_families]
    counts = _faces_drawing(faces, coverage, allowed)
    on_both_sides = (
        _faces_drawing(train_faces, coverage, allowed).keys() & _faces_drawing(test_faces, coverage, allowed).keys()
    )
    eligible = {cp for cp in on_both_sides if counts[cp] >= min_faces}
    classes = _choose(counts, eligible, num_classes, faces)
    logger.info("glyph classification: %d classes; test families %s", len(classes), sorted(test_families))
    features = Features(
        {"image": Image(), "label": ClassLabel(names=[chr(cp) for cp in classes]), "font": Value("string")}
    )
    splits = {}
    for split, split_faces in (("train", train_faces), ("test", test_faces)):
        rows = {"image": [], "label": [], "font": []}
        for image, label, face, _ in _render_all(classes, split_faces, coverage, params, desc=f"glyphs {split}"):
            rows["image"].append(image)
            rows["label"].append(label)
            rows["font"].append(face.name)
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    return DatasetDict(splits)


def family_coverage(faces: list[Face], coverage, allowed: set[int] | None) -> dict[str, dict[int, Face]]:
    """Per font family, the code points it draws (within `allowed`) and the face that draws each: the family's first
    face (in `faces`' order) that draws it."""
    drawn: dict[str, dict[int, Face]] = {}
    for face in faces:
        by_code_point = drawn.setdefault(face.family, {})
        for code_point in coverage[face]:
            if (allowed is None or code_point in allowed) and code_point not in by_code_point:
                by_code_point[code_point] = face
    return drawn


def per_class_families(
    code_point: int, families: list[str], seed: int, max_train_families: int | None
) -> tuple[str, list[str]]:
    """(test family, training families) of one class, among the `families` that draw it: a seeded permutation's
    first family tests, the next `max_train_families` (all, when None) train."""
    order = np.random.default_rng([seed, code_point]).permutation(len(families))
    chosen = [sorted(families)[i] for i in order]
    return chosen[0], chosen[1:][:max_train_families]


def _per_class_task(faces, coverage, allowed, num_classes, min_families, max_train_families, params) -> DatasetDict:
    drawn = family_coverage(faces, coverage, allowed)
    families_of: dict[int, list[str]] = {}
    for family, by_code_point in drawn.items():
        for code_point in by_code_point:
            families_of.setdefault(code_point, []).append(family)
    counts = {cp: len(families) for cp, families in families_of.items()}
    eligible = {cp for cp, n in counts.items() if n >= min_families}
    classes = _choose(counts, eligible, num_classes, faces)
    seed, copies, seen = params["seed"], params["copies"], params["split"] == "per_class_seen"
    plan = {"train": [], "test": []}  # (class index, face, copy)
    for label, code_point in enumerate(classes):
        test_family, train_families = per_class_families(
            code_point, families_of[code_point], seed, max_train_families
        )
        if seen:  # the test family trains too; the test image is a rendering that no training image is
            train_families = [test_family, *train_families]
        plan["test"].append((label, drawn[test_family][code_point], copies if seen else 0))
        plan["train"] += [(label, drawn[f][code_point], copy) for f in train_families for copy in range(copies)]
    kind = "seen" if seen else "held-out"
    logger.info("glyph classification (one %s family per class): %d classes", kind, len(classes))
    features = Features(
        {"image": Image(), "label": ClassLabel(names=[chr(cp) for cp in classes]), "font": Value("string")}
    )
    splits = {}
    for split, rows_planned in plan.items():
        rows = {"image": [], "label": [], "font": []}
        for image, label, face, _ in _render_planned(classes, rows_planned, params, desc=f"glyphs {split}"):
            rows["image"].append(image)
            rows["label"].append(label)
            rows["font"].append(face.name)
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    return DatasetDict(splits)


def _render_planned(classes: list[int], planned: list[tuple[int, Face, int]], params, desc: str):
    """Yield (image, class index, face, copy) for each planned (class index, face, copy); each image's randomness is
    seeded by the seed, the code point, the face's design key and the copy."""
    size, augment, seed = params["image_size"], params["augment"], params["seed"]
    fonts: dict[Face, ImageFont.FreeTypeFont] = {}
    for label, face, copy in tqdm(planned, desc=desc, leave=False, mininterval=5):
        font = fonts.get(face) or fonts.setdefault(face, face.pil_font(2 * size))
        rng = np.random.default_rng([seed, classes[label], face.design_key, copy])
        yield render_glyph(font, chr(classes[label]), size, rng, augment), label, face, copy


def _reid_task(faces, coverage, allowed, num_classes, min_faces, test_fraction, params) -> DatasetDict:
    counts = _faces_drawing(faces, coverage, allowed)
    identities = _choose(counts, {cp for cp, n in counts.items() if n >= min_faces}, num_classes, faces)
    order = np.random.default_rng(params["seed"]).permutation(len(identities))
    num_test = max(1, round(test_fraction * len(identities)))
    test_ids = sorted(identities[i] for i in order[:num_test])
    train_ids = sorted(identities[i] for i in order[num_test:])
    camera = {face: index for index, face in enumerate(faces)}
    splits = {name: {"image": [], "pid": [], "camid": [], "label": []} for name in ("train", "query", "gallery")}
    for image, label, face, _ in _render_all(train_ids, faces, coverage, params, desc="glyphs train"):
        _append(splits["train"], image, train_ids[label], camera[face], label)
    for image, label, face, copy in _render_all(test_ids, faces, coverage, params, desc="glyphs query/gallery"):
        _append(splits["query" if copy == 0 else "gallery"], image, test_ids[label], camera[face], -1)
    return DatasetDict(
        {name: datasets.Dataset.from_dict(rows, features=REID_FEATURES) for name, rows in splits.items()}
    )


def _append(rows: dict[str, list], image, pid: int, camid: int, label: int) -> None:
    rows["image"].append(image)
    rows["pid"].append(pid)
    rows["camid"].append(camid)
    rows["label"].append(label)


def _render_all(classes: list[int], faces: list[Face], coverage, params, desc: str):
    """Yield (image, class index, face, copy) for every face that draws each class, `copies` times."""
    planned = [
        (label, face, copy)
        for label, code_point in enumerate(classes)
        for face in faces
        if code_point in coverage[face]
        for copy in range(params["copies"])
    ]
    yield from _render_planned(classes, planned, params, desc)


def render_glyph(
    font: ImageFont.FreeTypeFont, character: str, size: int, rng: np.random.Generator, augment: bool = True
) -> PILImage.Image:
    """A grey `size` x `size` image of `character`, white on black, its larger side 80 percent of the image; with
    `augment`, scaled by U(0.85, 1.05), rotated by U(-8, 8) degrees and shifted by up to 2 pixels."""
    left, top, right, bottom = font.getbbox(character)
    glyph = PILImage.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(glyph).text((-left, -top), character, font=font, fill=255)
    scale = 0.8 * size / max(glyph.size) * (rng.uniform(0.85, 1.05) if augment else 1.0)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), PILImage.BILINEAR)
    if augment:
        glyph = glyph.rotate(rng.uniform(-8, 8), resample=PILImage.BILINEAR, expand=True)
    shift_x, shift_y = rng.integers(-2, 3, size=2) if augment else (0, 0)
    canvas = PILImage.new("L", (size, size))
    canvas.paste(glyph, ((size - glyph.width) // 2 + int(shift_x), (size - glyph.height) // 2 + int(shift_y)))
    return canvas
