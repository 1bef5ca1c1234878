"""Tiny models and data for the tests: timm and transformers classifiers from configs (random weights, no
download), the trainer tests' arguments, seeded random images, and tiny CIFAR-100 and Market-1501 releases in their
original formats."""

import io
import pickle
import struct
from pathlib import Path

import datasets
import numpy as np
import timm
import torch
import transformers
from PIL import Image

from hf_dis import DistillationArguments
from hf_dis.data.cifar100 import FINE_NAMES
from hf_dis.data.market1501 import REID_FEATURES

TINY_VIT = dict(
    image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24
)


def tiny_hf(model_type: str, num_labels: int = 13):
    """Tiny transformers classifiers from configs (random weights, no download)."""
    configs = {
        "resnet": lambda: transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
        "regnet": lambda: transformers.RegNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8
        ),
        "convnext": lambda: transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "convnextv2": lambda: transformers.ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "swin": lambda: transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
        ),
        "swinv2": lambda: transformers.Swinv2Config(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
        ),
        "mobilenet_v2": lambda: transformers.MobileNetV2Config(
            image_size=32, depth_multiplier=0.35, classifier_dropout_prob=0.5
        ),
        "efficientnet": lambda: transformers.EfficientNetConfig(
            image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, dropout_rate=0.5
        ),
        "vit": lambda: transformers.ViTConfig(**TINY_VIT),
        "deit": lambda: transformers.DeiTConfig(**TINY_VIT),
    }
    config = configs[model_type]()
    config.num_labels = num_labels
    torch.manual_seed(0)
    if model_type == "deit":  # the Auto class maps DeiT to its two-headed variant
        return transformers.DeiTForImageClassification(config).eval()
    return transformers.AutoModelForImageClassification.from_config(config).eval()


NUM_CLASSES = 20


def timm_model(name: str = "test_convnext", num_classes: int = NUM_CLASSES, seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=num_classes)


def make_args(tmp_path, **overrides) -> DistillationArguments:
    options = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        optim="sgd",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        overwrite_output_dir=True,  # tests train several students into one tmp folder
    )
    options.update(overrides)
    options.setdefault("sampler", "dis")  # explicit: the default (auto) times the head, and tests must not
    if options["sampler"] == "dis" and "dis_refit_every" not in options:
        options["dis_refit_every"] = 2  # probe at steps 0, 2, ...: short runs see both kinds of step
    return DistillationArguments(**options)


def parameters(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def image_dataset(size: int = 12, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(size)]
    return datasets.Dataset.from_dict({"image": images, "label": rng.integers(NUM_CLASSES, size=size).tolist()})


class StopAt(transformers.TrainerCallback):
    """Ends training after optimizer step `step` (an interrupted run, to resume)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class RandomImages(torch.utils.data.Dataset):
    """Seeded 32 px images with labels (or without, for label-free distillation)."""

    def __init__(self, size: int = 16, seed: int = 0, with_labels: bool = True, num_classes: int = NUM_CLASSES) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, 32, 32, generator=generator)
        self.labels = torch.randint(num_classes, (size,), generator=generator)
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {"pixel_values": self.images[index]}
        if self.with_labels:
            item["labels"] = self.labels[index]
        return item


def identity_split(num_ids, per_id, start_pid, label=True, seed=0):
    """Each identity is a colour; images are that colour plus noise, from cameras 0..per_id-1."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "pid": [], "camid": [], "label": []}
    for i in range(num_ids):
        colour = rng.integers(0, 256, 3)
        for copy in range(per_id):
            pixels = np.clip(colour + rng.normal(0, 20, (32, 16, 3)), 0, 255).astype(np.uint8)
            rows["image"].append(Image.fromarray(pixels))
            rows["pid"].append(start_pid + i)
            rows["camid"].append(copy)
            rows["label"].append(i if label else -1)
    return datasets.Dataset.from_dict(rows, features=REID_FEATURES)


def write_market_release(root: Path, num_train_ids: int = 6, num_test_ids: int = 4) -> Path:
    """A tiny Market-1501 release in the original layout and naming (pid_cCsS_frame_box.jpg)."""
    release = root / "Market-1501-v15.09.15"
    rng = np.random.default_rng(0)

    def write(folder: str, pid: int, camera: int, index: int) -> None:
        (release / folder).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(release / folder / f"{pid:04d}_c{camera}s1_{index:06d}_00.jpg", format="JPEG")

    for pid in range(1, num_train_ids + 1):
        for index, camera in enumerate((1, 2, 3, 4)):
            write("bounding_box_train", pid * 2, camera, index)
    for pid in range(100, 100 + num_test_ids):
        write("query", pid, 1, 0)
        for index, camera in enumerate((2, 3)):
            write("bounding_box_test", pid, camera, index)
    write("bounding_box_test", 0, 5, 0)  # a distractor
    return root


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING opcodes), as the authors' cPickle files do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, value: bytes) -> None:
        if len(value) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(value)) + value)
        self.memoize(value)

    dispatch[bytes] = save_py2_str


def write_py2_pickle(path: Path, content: dict) -> None:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(content)
    path.write_bytes(buffer.getvalue())


def write_cifar100_release(folder: Path, sizes: dict[str, int]) -> dict[str, tuple[np.ndarray, list[int], list[int]]]:
    """A tiny `cifar-100-python` folder as the authors' cPickle files (meta, train, test), with `sizes[split]` seeded
    random images per split; returns each split's images, fine and coarse labels."""
    folder.mkdir(parents=True)
    coarse_names = [f"superclass_{i}".encode() for i in range(20)]
    fine_names = [name.encode() for name in FINE_NAMES]
    write_py2_pickle(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    splits = {}
    for seed, (split, count) in enumerate(sizes.items()):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, count)]
        coarse = [int(v) for v in rng.integers(0, 20, count)]
        rows = images.transpose(0, 3, 1, 2).reshape(count, -1)  # R plane, G plane, B plane per row
        content = {
            b"filenames": [f"img_{i}.png".encode() for i in range(count)],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": rows,
        }
        write_py2_pickle(folder / split, content)
        splits[split] = images, fine, coarse
    return splits
