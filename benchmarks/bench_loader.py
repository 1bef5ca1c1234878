"""Images per second of the recipes' training augmentation in one process: torchvision's modules image by image
against `padded_crop_transform`'s batch path (the same images for the same seed: tested), from PNG / JPEG bytes
as `datasets` stores them. A small-image study on a GPU is limited by its data loaders, not by the GPU.

Cases: the glyph task (rendered here: 32 x 32 PNG glyphs, the classification recipe's pad-and-crop, no flip) and
re-ID-sized images (random 128 x 64 JPEGs resized to 256 x 128 with BoT's flip, pad 10, crop and random erasing,
as Market-1501's). Batches of 256; median over `--repeats` passes; the ratio is measured side by side in one run.

    python benchmarks/bench_loader.py              # writes results/bench_loader.{jsonl,md,png}
    python benchmarks/bench_loader.py --smoke --out /tmp/x   # seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import datasets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from run_info import run_info, write_results  # noqa: E402
from torchvision import transforms  # noqa: E402

from hf_dis.data import load_glyphs, padded_crop_transform  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_pipeline(image_size, mean, std, *, training, hflip=0.5, padding=4, random_erasing=0.0):
    """The torchvision modules `padded_crop_transform` stands for (its reference in the tests too)."""
    steps = [transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC)]
    if training:
        steps += [transforms.RandomHorizontalFlip(hflip), transforms.Pad(padding), transforms.RandomCrop(image_size)]
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if training and random_erasing:
        steps.append(transforms.RandomErasing(p=random_erasing, value=0))
    pipeline = transforms.Compose(steps)
    return lambda image: pipeline(image.convert("RGB"))


def glyph_images(count: int, cache_dir: Path | None) -> list[bytes]:
    """PNG bytes of `count` training glyphs (300 classes from matplotlib's fonts: the same on every machine)."""
    train = load_glyphs(300, include_system_fonts=False, cache_dir=cache_dir)["train"]
    stored = train.cast_column("image", datasets.Image(decode=False))["image"]
    return [stored[i % len(stored)]["bytes"] for i in range(count)]


def reid_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def images_per_second(transform_batch, encoded: list[bytes], batch_size: int, repeats: int) -> float:
    """Decode + transform every image, `batch_size` at a time; the median over `repeats` passes."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(encoded), batch_size):
            transform_batch([Image.open(io.BytesIO(data)) for data in encoded[first : first + batch_size]])
        rates.append(len(encoded) / (time.perf_counter() - start))
    return statistics.median(rates)


def run(args: argparse.Namespace) -> list[dict]:
    cases = {
        "glyphs 32 x 32": (glyph_images(args.images, args.cache_dir), (32, 32), dict(hflip=0.0, padding=4)),
        "re-ID 256 x 128": (reid_images(args.images), (256, 128), dict(padding=10, random_erasing=0.5)),
    }
    rows = []
    for case, (encoded, size, options) in cases.items():
        reference = torchvision_pipeline(size, MEAN, STD, training=True, **options)
        fast = padded_crop_transform(training=True, image_size=size, mean=MEAN, std=STD, **options)
        pipelines = {
            "torchvision, image by image": lambda images, reference=reference: torch.stack(
                [reference(image) for image in images]
            ),
            "padded_crop_transform, batch": fast.batch,
        }
        for name, transform_batch in pipelines.items():
            torch.manual_seed(0)
            rate = images_per_second(transform_batch, encoded, args.batch_size, args.repeats)
            rows.append({"case": case, "pipeline": name, "images_per_second": rate})
            print(f"{case:<16} {name:<30} {rate:9.0f} images/s")
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| case | pipeline | images / s | x torchvision |", "|---|---|---|---|"]
    for row in rows:
        base = next(
            r["images_per_second"] for r in rows if r["case"] == row["case"] and r["pipeline"].startswith("torch")
        )
        lines.append(f"| {row['case']} | {row['pipeline']} | {row['images_per_second']:,.0f} | "
                     f"{row['images_per_second'] / base:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    cases = list(dict.fromkeys(row["case"] for row in rows))
    pipelines = list(dict.fromkeys(row["pipeline"] for row in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(pipelines)
    for offset, pipeline in enumerate(pipelines):
        values = [next(r["images_per_second"] for r in rows if r["case"] == c and r["pipeline"] == pipeline)
                  for c in cases]  # fmt: skip
        ax.bar([i + offset * width for i in range(len(cases))], values, width, label=pipeline)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases)
    ax.set(ylabel="images / s (one process)", title="Training augmentation, decode included")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None, help="glyph cache (default: hf_dis's)")
    parser.add_argument("--smoke", action="store_true", help="64 images, batches of 16, one pass")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.smoke:
        args.images, args.batch_size, args.repeats = 64, 16, 1
    torch.set_num_threads(1)  # one loader process
    rows = run(args)
    info = {**run_info("cpu"), "images": args.images, "batch_size": args.batch_size, "repeats": args.repeats}
    header = (
        f"Generated by `benchmarks/bench_loader.py` on {info['date']}: {info['device']}, torch {info['torch']}, "
        f"{args.images} images in batches of {args.batch_size}, median of {args.repeats} passes, one process."
    )
    write_results(args.out, "bench_loader", info, rows, header + "\n\n" + markdown(rows))
    plot(rows, args.out / "bench_loader.png")


if __name__ == "__main__":
    main()
