"""Loaders on fixtures written in the exact original formats, the glyph benchmark, and the transforms."""

import dataclasses
import io
import os
import shutil
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from tiny_models import write_cifar100_release

from hf_dis.data import (
    charset_code_points,
    data_config,
    image_transform,
    labelled_batches,
    labelled_dataset,
    load_cifar100,
    load_glyphs,
    load_market1501,
    padded_crop_transform,
)
from hf_dis.data.cifar100 import FINE_NAMES
from hf_dis.data.fonts import MAX_SHARED_BITMAP, discover_faces, face_coverage
from hf_dis.data.glyphs import FACE_SETS, _render_all, faces_named

# --- CIFAR-100 ----------------------------------------------------------------------------------------------------


@pytest.fixture
def cifar_copies(tmp_path):
    """The same tiny CIFAR-100 as the authors' `cifar-100-python` pickles and as a Hub-style parquet copy."""
    splits = write_cifar100_release(tmp_path / "cifar-100-python", {"train": 5, "test": 3})
    parquet = tmp_path / "parquet" / "cifar100"
    parquet.mkdir(parents=True)
    for split, (images, fine, coarse) in splits.items():
        table = datasets.Dataset.from_dict(
            {"img": [Image.fromarray(image) for image in images], "fine_label": fine, "coarse_label": coarse},
            features=datasets.Features(
                {
                    "img": datasets.Image(),
                    "fine_label": datasets.ClassLabel(names=list(FINE_NAMES)),
                    "coarse_label": datasets.ClassLabel(names=[f"superclass_{i}" for i in range(20)]),
                }
            ),
        )
        table.to_parquet(str(parquet / f"{split}-00000-of-00001.parquet"))
    return tmp_path, splits


def test_cifar100_original_pickles_and_parquet_load_the_same_rows(cifar_copies):
    root, splits = cifar_copies
    from_pickles = load_cifar100(root / "cifar-100-python")
    from_parent = load_cifar100(root)  # the folder that contains cifar-100-python
    from_parquet = load_cifar100(root / "parquet")
    for loaded in (from_pickles, from_parent, from_parquet):
        assert sorted(loaded) == ["test", "train"]
        assert loaded["train"].column_names == ["image", "label", "coarse_label"]
        assert loaded["train"].features["label"].names == list(FINE_NAMES)
        for split, (images, fine, coarse) in splits.items():
            table = loaded[split]
            assert table["label"] == fine and table["coarse_label"] == coarse
            for index, image in enumerate(images):
                assert np.array_equal(np.asarray(table[index]["image"].convert("RGB")), image)


def test_cifar100_image_folder_copy(tmp_path):
    rng = np.random.default_rng(0)
    for split, names in (("train", ("apple", "whale", "apple")), ("test", ("whale",))):
        for index, name in enumerate(names):
            folder = tmp_path / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    loaded = load_cifar100(tmp_path)
    labels = [FINE_NAMES[label] for label in loaded["train"]["label"]]
    assert sorted(labels) == ["apple", "apple", "whale"]
    coarse = loaded["train"].features["coarse_label"].names
    assert {coarse[c] for c in loaded["train"]["coarse_label"]} == {"fruit_and_vegetables", "aquatic_mammals"}


def test_cifar100_unreachable_hub_fails_before_any_retry(monkeypatch):
    """Not in offline mode but no route to the Hub: a connection probe fails at once (datasets would retry ~25 s)."""
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not be reached"))
    with pytest.raises(ConnectionError, match=r"127.0.0.1:9\) is unreachable.*three ways"):
        load_cifar100()


def test_cifar100_offline_without_a_copy_names_the_three_ways(tmp_path):
    with pytest.raises(ConnectionError, match=r"three ways.*cifar-100-python.*parquet"):
        load_cifar100()
    with pytest.raises(FileNotFoundError, match="no CIFAR-100 copy found"):
        load_cifar100(tmp_path)


# --- Market-1501 --------------------------------------------------------------------------------------------------


def write_jpeg(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


MARKET_FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s2_001201_02.jpg",
                           "0010_c6s3_045021_01.jpg"],
    "query": ["0007_c1s1_000151_01.jpg", "0010_c2s1_000201_01.jpg"],
    "bounding_box_test": ["0007_c4s1_000601_02.jpg", "0010_c5s2_003301_01.jpg", "0000_c1s1_000002_00.jpg",
                          "-1_c3s1_000003_00.jpg", "-1_c2s2_000004_00.jpg"],
}  # fmt: skip


@pytest.fixture
def market_root(tmp_path):
    release = tmp_path / "Market-1501-v15.09.15"
    for folder, names in MARKET_FILES.items():
        (release / folder).mkdir(parents=True)
        for index, name in enumerate(names):
            write_jpeg(release / folder / name, index)
    (release / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")  # as in the real release
    return tmp_path


def test_market1501_counts_relabelling_and_cameras(market_root):
    with pytest.warns(UserWarning, match=r"counts .* are .*'train': \(4, 3\).*the real release has"):
        loaded = load_market1501(market_root)  # the parent of the release folder
    train, query, gallery = loaded["train"], loaded["query"], loaded["gallery"]
    assert train["pid"] == [2, 2, 7, 10] and train["label"] == [0, 0, 1, 2] and train["camid"] == [0, 1, 2, 5]
    assert query["pid"] == [7, 10] and query["label"] == [-1, -1] and query["camid"] == [0, 1]
    assert sorted(gallery["pid"]) == [0, 7, 10]  # distractor kept, junk (-1) dropped, Thumbs.db ignored
    assert train[0]["image"].size == (8, 16)
    with pytest.warns(UserWarning):
        assert load_market1501(market_root / "Market-1501-v15.09.15")["train"]["pid"] == train["pid"]


def test_market1501_malformed_names_and_unreadable_images(market_root):
    folder = market_root / "Market-1501-v15.09.15" / "bounding_box_train"
    write_jpeg(folder / "0002_c9s1_000451_03.jpg", 0)  # camera 9 does not exist
    write_jpeg(folder / "person_12.jpg", 1)
    (folder / "0011_c1s1_000001_01.jpg").write_bytes(b"truncated garbage")
    with pytest.raises(ValueError, match=r"2 malformed file names \(first: \['0002_c9s1_000451_03.jpg', 'person_12"):
        load_market1501(market_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_market1501(market_root, skip_bad_files=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "2 malformed file names" in messages and "1 unreadable images" in messages and "skipped" in messages
    assert loaded["train"]["pid"] == [2, 2, 7, 10]


def test_market1501_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Market-1501 release"):
        load_market1501(tmp_path)


# --- glyphs -------------------------------------------------------------------------------------------------------

GLYPHS = dict(num_classes=40, include_system_fonts=False, image_size=16)


def test_glyph_classification_is_deterministic_and_font_disjoint(tmp_path):
    first = load_glyphs(**GLYPHS, cache_dir=tmp_path / "a")
    second = load_glyphs(**GLYPHS, cache_dir=tmp_path / "b")  # rendered again from scratch
    assert first["train"].features["label"].num_classes == 40
    for split in ("train", "test"):
        assert len(first[split]) == len(second[split]) > 0
        for index in range(0, len(first[split]), 97):
            assert first[split][index]["image"].tobytes() == second[split][index]["image"].tobytes()
    faces = {face.name: face.family for face in discover_faces(include_system=False)}
    train_families = {faces[name] for name in first["train"]["font"]}
    test_families = {faces[name] for name in first["test"]["font"]}
    assert train_families and test_families and not train_families & test_families
    assert set(first["train"]["label"]) == set(first["test"]["label"]) == set(range(40))
    assert all(len(name) == 1 for name in first["train"].features["label"].names)
    image = np.asarray(first["train"][0]["image"])
    assert image.shape == (16, 16) and image.max() > 0


def test_other_seed_renders_other_pixels(tmp_path):
    base = load_glyphs(**GLYPHS, cache_dir=tmp_path)
    other = load_glyphs(**GLYPHS, seed=1, cache_dir=tmp_path)
    assert base["train"]["label"] == other["train"]["label"]
    assert any(base["train"][i]["image"].tobytes() != other["train"][i]["image"].tobytes() for i in range(20))


def test_the_same_font_installed_at_another_time_renders_the_same_glyphs(tmp_path):
    """The faces' random streams are keyed by file name, index and size, not by modification time (which only keys
    the caches): two installs of one font file draw the same augmented glyphs."""
    source = discover_faces(include_system=False)[0]
    faces = []
    for install, mtime in (("a", 1_000_000_000), ("b", 1_700_000_000)):
        path = tmp_path / install / os.path.basename(source.path)
        path.parent.mkdir()
        shutil.copyfile(source.path, path)
        os.utime(path, (mtime, mtime))
        faces.append(dataclasses.replace(source, path=str(path)))
    assert faces[0].fingerprint != faces[1].fingerprint
    assert faces[0].design_key == faces[1].design_key
    params = {"image_size": 16, "copies": 2, "augment": True, "seed": 0}
    images = [
        [image.tobytes() for image, *_ in _render_all([ord("g")], [face], {face: {ord("g")}}, params, "g")]
        for face in faces
    ]
    assert len(images[0]) == 2 and images[0] == images[1]


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    first = load_glyphs(**GLYPHS, cache_dir=tmp_path)

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr("hf_dis.data.glyphs.render_glyph", no_rendering)
    second = load_glyphs(**GLYPHS, cache_dir=tmp_path)
    assert second["test"]["label"] == first["test"]["label"]


def test_glyph_reid_protocol_has_disjoint_identities(tmp_path):
    task = load_glyphs(**{**GLYPHS, "num_classes": 60}, protocol="reid", cache_dir=tmp_path)
    assert sorted(task) == ["gallery", "query", "train"]
    assert task["train"].column_names == ["image", "pid", "camid", "label"]  # as load_market1501
    train_ids, query_ids = set(task["train"]["pid"]), set(task["query"]["pid"])
    assert len(train_ids) == 45 and len(query_ids) == 15 and not train_ids & query_ids
    assert set(task["gallery"]["pid"]) == query_ids
    assert sorted(set(task["train"]["label"])) == list(range(45)) and set(task["query"]["label"]) == {-1}
    # every query identity can be found in the gallery from another camera (font)
    gallery = set(zip(task["gallery"]["pid"], task["gallery"]["camid"], strict=True))
    for pid, camid in zip(task["query"]["pid"], task["query"]["camid"], strict=True):
        assert any(g_pid == pid and g_cam != camid for g_pid, g_cam in gallery)


def test_glyphs_from_named_font_families(tmp_path):
    families = ["DejaVu Sans", "DejaVu Serif"]
    task = load_glyphs(**GLYPHS, families=families, copies=1, cache_dir=tmp_path)
    faces = {face.name: face.family for face in discover_faces(include_system=False)}
    train_families = {faces[name] for name in task["train"]["font"]}
    test_families = {faces[name] for name in task["test"]["font"]}
    assert train_families | test_families == set(families) and not train_families & test_families
    pairs = list(zip(task["train"]["label"], task["train"]["font"], strict=True))
    assert len(pairs) == len(set(pairs))  # one rendering per character and face
    with pytest.raises(ValueError, match=r"not found on this machine: \['No Such Family'\]\. Found: .*DejaVu Sans"):
        load_glyphs(**GLYPHS, families=["DejaVu Sans", "No Such Family"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="families is empty"):
        load_glyphs(**GLYPHS, families=[], cache_dir=tmp_path)


def test_coverage_rejects_boxes_and_unmapped_code_points(tmp_path):
    faces = discover_faces(include_system=False)
    names = [face.name for face in faces]
    assert not any(name.startswith(("LastResort", "cm", "STIXNonUnicode")) for name in names)
    dejavu = next(face for face in faces if face.name == "DejaVu Sans")
    covered = face_coverage(dejavu, tmp_path)
    assert ord("ж") in covered and ord("ß") in covered and ord("B") not in covered  # B, Greek Beta, Cyrillic Ve, ...
    assert 0x4E00 not in covered and 0xE000 not in covered and ord(" ") not in covered  # CJK, private use, space
    assert face_coverage(dejavu, tmp_path) == covered  # from the cache file
    assert list((tmp_path / "coverage").glob("*.json"))


def test_asking_for_more_classes_than_the_fonts_draw(tmp_path):
    with pytest.raises(ValueError, match=r"only [\d,]+ characters qualify.*apt-get install .*fonts-hanazono"):
        load_glyphs(num_classes=10**6, include_system_fonts=False, cache_dir=tmp_path)


def test_per_class_split_holds_out_one_unseen_family_per_class(tmp_path):
    """split="per_class": each class's test image is in a font family none of its training images uses, drawn per
    class; max_train_families caps the training families; the same call renders the same task."""
    family = {face.name: face.family for face in discover_faces(include_system=False)}
    options = dict(include_system_fonts=False, split="per_class", min_faces=2, copies=1, image_size=16)
    task = load_glyphs(300, max_train_families=1, cache_dir=tmp_path / "a", **options)
    train, test = task["train"], task["test"]
    assert len(test) == 300 and sorted(test["label"]) == list(range(300))  # one test image per class
    train_families: dict[int, set[str]] = {}
    for label, font in zip(train["label"], train["font"], strict=True):
        train_families.setdefault(label, set()).add(family[font])
    assert set(train_families) == set(range(300))  # every class trains
    for label, font in zip(test["label"], test["font"], strict=True):
        assert family[font] not in train_families[label]
    assert max(len(families) for families in train_families.values()) == 1
    assert len(set(test["font"])) > 1  # the held-out family differs between classes
    again = load_glyphs(300, max_train_families=1, cache_dir=tmp_path / "b", **options)
    assert again["test"]["font"] == test["font"] and again["train"]["image"][:5] == train["image"][:5]
    more = load_glyphs(300, cache_dir=tmp_path / "a", **options)  # all the other families train
    assert len(more["train"]) > len(train) and more["test"]["font"] == test["font"]
    with pytest.raises(ValueError, match="needs min_faces >= 2"):
        load_glyphs(10, include_system_fonts=False, split="per_class", min_faces=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="max_train_families is an option of the per-class splits"):
        load_glyphs(10, include_system_fonts=False, max_train_families=2, cache_dir=tmp_path)
    # per_class_seen: the same classes and test families, the test family trained on, the test image a new rendering
    seen = load_glyphs(300, max_train_families=1, cache_dir=tmp_path / "a", **{**options, "split": "per_class_seen"})
    assert seen["test"]["font"] == test["font"] and seen["test"]["label"] == test["label"]
    assert len(seen["train"]) == len(train) + len(test)
    seen_rows = set(zip(seen["train"]["label"], seen["train"]["font"], strict=True))
    assert all((label, font) in seen_rows for label, font in zip(test["label"], test["font"], strict=True))
    columns = ("label", "font", "image")
    seen_images = {(label, font): image.tobytes() for label, font, image in zip(*(seen["train"][c] for c in columns))}
    tested = zip(*(seen["test"][c] for c in columns))
    assert all(seen_images[label, font] != image.tobytes() for label, font, image in tested)  # another rendering
    with pytest.raises(ValueError, match="needs augment=True"):
        load_glyphs(10, include_system_fonts=False, split="per_class_seen", augment=False, cache_dir=tmp_path)


def test_gb2312_character_sets():
    level1, full = charset_code_points("gb2312-level1"), charset_code_points("gb2312")
    assert (len(level1), len(full)) == (3755, 6763) and level1 == full[:3755]
    assert chr(level1[0]) == "啊" and chr(full[-1]) == "齄"


CJK_FONTS = ("gkai00mp", "gbsn00lp", "wqy-microhei", "unifont", "SmileySans")


def cjk_fonts_installed() -> bool:
    paths = " ".join(face.path for face in discover_faces())
    return all(name in paths for name in CJK_FONTS)


@pytest.mark.skipif(not cjk_fonts_installed(), reason="the 5 CJK font packages are not installed (CI installs them)")
def test_gb2312_tasks_with_the_cjk_fonts(tmp_path):
    """With the faces of the 5 packages alone, all 6,763 GB2312 hanzi qualify, in train and test; so do the 3,755 of
    level 1, a subset (a character qualifies by its own coverage, whatever the set: rendering the level-1 task as well
    would add minutes). Other fonts installed here are left out: the task, and its time, are CI's on every machine."""
    packaged = sorted(
        {face.name for face in discover_faces(include_system=True) if any(name in face.path for name in CJK_FONTS)}
    )
    task = load_glyphs(
        charset="gb2312", copies=1, image_size=16, augment=False, include_system_fonts=True, faces=packaged,
        cache_dir=tmp_path,
    )  # fmt: skip
    names = task["train"].features["label"].names
    assert sorted(ord(name) for name in names) == sorted(charset_code_points("gb2312"))
    assert len(set(task["test"]["label"])) == 6763


# --- transforms ---------------------------------------------------------------------------------------------------


def test_transforms_follow_the_model_and_make_grey_images_rgb():
    model = timm.create_model("test_resnet", num_classes=3)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.2, 0.3, 0.4), "std": (0.5, 0.5, 0.5)}
    transform = image_transform(model, training=False, image_size=24)
    grey = Image.fromarray(np.full((40, 40), 255, dtype=np.uint8), mode="L")
    pixels = transform(grey)
    assert pixels.shape == (3, 24, 24)
    torch.testing.assert_close(pixels[:, 12, 12], (1 - torch.tensor([0.2, 0.3, 0.4])) / 0.5)
    batch = labelled_batches(transform)({"image": [grey, grey], "label": [2, 0]})
    assert batch["labels"] == [2, 0] and len(batch["pixel_values"]) == 2
    assert "labels" not in labelled_batches(transform)({"image": [grey]})
    train = image_transform(model, training=True, image_size=24, hflip=0.0)
    assert train(grey).shape == (3, 24, 24)


def test_data_config_from_a_transformers_processor():
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 48, "width": 48}, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    config = data_config(processor=processor)
    assert config["input_size"] == (3, 48, 48) and config["mean"] == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="carries no data config"):
        data_config(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "image_size, options",
    [((32, 32), dict(hflip=0.0, padding=4)), ((32, 16), dict(hflip=0.5, padding=2, random_erasing=0.5)),
     ((24, 24), dict(hflip=0.5, padding=3, random_erasing=1.0))],
)  # fmt: skip
def test_padded_crop_makes_torchvisions_images_with_its_random_draws(image_size, options, monkeypatch):
    """Same seed, same images and same generator state after, for one image or a batch; erased boxes included."""

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_loader import torchvision_pipeline  # the reference the benchmark times too

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (30 + k, 20 + 3 * k, 3), dtype=np.uint8)) for k in range(12)]
    images.append(Image.fromarray(rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)).convert("L"))  # grey
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
    for training in (True, False):
        fast = padded_crop_transform(training=training, image_size=image_size, mean=mean, std=std, **options)
        reference = torchvision_pipeline(image_size, mean, std, training=training, **options)
        torch.manual_seed(3)
        expected = torch.stack([reference(image) for image in images])
        after = torch.rand(1)
        torch.manual_seed(3)
        assert torch.equal(fast.batch(images), expected) and torch.equal(torch.rand(1), after)
        torch.manual_seed(3)
        assert torch.equal(torch.stack([fast(image) for image in images]), expected)
        if training and options.get("random_erasing"):  # some boxes were erased: pixels exactly 0 in every channel
            assert (expected == 0).all(1).any()
    batch = labelled_batches(fast)({"image": images, "label": list(range(len(images)))})
    assert batch["pixel_values"].shape == (len(images), 3, *image_size)  # one tensor: the batch path was taken
    assert fast.batch([]).shape == (0, 3, *image_size)


def test_labelled_dataset_decodes_pngs_itself_to_the_same_pixels(tmp_path):
    """With a padded_crop_transform, labelled_dataset reads the images undecoded and decodes PNGs with libpng: the
    same batches as PIL's decoding (grey, palette, RGBA, another size: resized through PIL; a JPEG: decoded by
    datasets), seeds included."""
    from hf_dis.data.transforms import decoded_png

    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L")
    images = [grey, grey.convert("P"), Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), "RGBA"),
              Image.fromarray(rng.integers(0, 255, (20, 12, 3), dtype=np.uint8))]  # fmt: skip
    jpeg = io.BytesIO()
    images[3].save(jpeg, format="JPEG")  # not a PNG: datasets' own decoder, as without the fast path
    images.append({"bytes": jpeg.getvalue(), "path": None})
    table = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 3, 0]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))  # fmt: skip
    transform = padded_crop_transform(image_size=(16, 16), training=True, hflip=0.5, padding=2)
    fast = labelled_dataset(table, transform)
    assert not fast.features["image"].decode  # read undecoded
    torch.manual_seed(3)
    expected = table.with_transform(labelled_batches(transform))[:]["pixel_values"]
    torch.manual_seed(3)
    assert torch.equal(fast[:]["pixel_values"], expected)
    raw = table.cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert decoded_png(raw).shape == (16, 16, 3) and decoded_png({"bytes": b"not a png", "path": None}) is None


def test_padded_crop_refuses_bad_options():
    from hf_dis.data import padded_crop_transform

    with pytest.raises(ValueError, match="padding must be >= 0"):
        padded_crop_transform(training=True, image_size=(8, 8), padding=-1)


def _font_with_repeated_glyph(path: Path, repeated: int) -> Path:
    """A TrueType font whose code points U+4E00.. draw one square (all `repeated` of them, as a font that maps many
    code points to one placeholder), and 'A' / 'B' two other shapes."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def box(x0, y0, x1, y1):
        pen = TTGlyphPen(None)
        pen.moveTo((x0, y0)), pen.lineTo((x0, y1)), pen.lineTo((x1, y1)), pen.lineTo((x1, y0)), pen.closePath()
        return pen.glyph()

    glyphs = {".notdef": TTGlyphPen(None).glyph(), "square": box(100, 100, 900, 900), "A": box(100, 100, 300, 900),
              "B": box(100, 100, 900, 300)}  # fmt: skip
    cmap = {0x4E00 + index: "square" for index in range(repeated)} | {ord("A"): "A", ord("B"): "B"}
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(list(glyphs))
    builder.setupCharacterMap(cmap)
    builder.setupGlyf(glyphs)
    builder.setupHorizontalMetrics({name: (1000, 0) for name in glyphs})
    builder.setupHorizontalHeader(ascent=900, descent=-100)
    builder.setupNameTable({"familyName": "Repeats", "styleName": "Regular"})
    builder.setupOS2()
    builder.setupPost()
    builder.save(str(path))
    return path


@pytest.mark.parametrize("repeated", [MAX_SHARED_BITMAP, MAX_SHARED_BITMAP + 1])
def test_a_drawing_shared_by_too_many_code_points_is_not_a_character(repeated, tmp_path):
    """A bitmap drawn for more than MAX_SHARED_BITMAP code points is a placeholder: none of them counts; at the limit
    they all count. Distinct drawings always count."""
    from hf_dis.data.fonts import Face

    font = _font_with_repeated_glyph(tmp_path / "repeats.ttf", repeated)
    covered = face_coverage(Face(str(font), 0, "Repeats", "Repeats"), tmp_path)
    shared = {0x4E00 + index for index in range(repeated)}
    assert {ord("A"), ord("B")} <= covered
    assert (shared <= covered) if repeated <= MAX_SHARED_BITMAP else not (shared & covered)


def test_faces_are_chosen_by_name_or_by_named_set():
    """A face list keeps those faces, in discovery order; missing faces are an error naming them, and for the faces
    of a named set, their Debian packages and the apt command; an unknown set name lists the sets."""
    faces = discover_faces(include_system=False)
    chosen = faces_named(faces, ["DejaVu Serif", "DejaVu Sans"])
    assert [face.name for face in chosen] == [
        face.name for face in faces if face.name in ("DejaVu Sans", "DejaVu Serif")
    ]
    with pytest.raises(ValueError, match=r"not found on this machine: \['No Such Face'\]\.$"):
        faces_named(faces, ["DejaVu Sans", "No Such Face"])
    with pytest.raises(ValueError, match=r"Install them with: apt-get install .*fonts-babelstone-han.*fonts-seto"):
        faces_named(faces, "cjk-20k")  # matplotlib's faces only: every face of the set is missing
    with pytest.raises(ValueError, match=r"Unknown face set 'cjk-1m'; choose one of \['cjk-100k', 'cjk-20k'\]"):
        faces_named(faces, "cjk-1m")
    with pytest.raises(ValueError, match="faces is empty"):
        faces_named(faces, [])
    assert all(len(FACE_SETS[name]) >= 10 for name in FACE_SETS)
