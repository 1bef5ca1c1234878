"""The teacher cache at many classes: its size on disk and the time to read a training batch (images and cache
columns, with the recipes' augmentation) from it, for several R.

A cache of the first `--rows` training images of a rendered glyph task is made by the library
(`hf_dis.data.cache_teacher_logits`, one view, with a random-weight ResNet-10t teacher of the task's C classes: the
values do not change the size or the reading), saved with `save_to_disk` as `hf-dis cache-teacher` saves one, loaded
back, and read as a training run reads it: `labelled_dataset` with the 32 px glyph augmentation, shuffled batches
through a `DataLoader` with the Trainer's default collator, in this process (no workers). The whole training split's
size is projected from the bytes per row. `--keep DIR` keeps the caches (`DIR/top_r_R`) for
`bench_trainer.py --data`, which times the reading against the training steps in one run.

    python benchmarks/bench_cache_read.py --data /work/data/glyphs-100k --top-r 256 1024
    python benchmarks/bench_cache_read.py --smoke --out /tmp/x     # a tiny rendered task, seconds (the tests run it)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from bench_trainer import glyph_transform
from run_info import run_info, write_results
from torch.utils.data import DataLoader
from transformers import default_data_collator

import hf_dis
from hf_dis.data import cache_teacher_logits, labelled_dataset, load_glyphs

RESULTS = Path(__file__).resolve().parent / "results"


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def read_batches_ms(cached: datasets.Dataset, batch_size: int, batches: int) -> float:
    """Median milliseconds to read one shuffled training batch (images decoded and augmented, cache columns)."""
    loader = DataLoader(
        labelled_dataset(cached, glyph_transform(training=True)),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=default_data_collator,
        generator=torch.Generator().manual_seed(0),
    )
    times, iterator = [], iter(loader)
    next(iterator)  # the first batch opens the table
    for _ in range(batches):
        start = time.perf_counter()
        next(iterator)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a classification task saved by `hf-dis render-glyphs`")
    parser.add_argument("--rows", type=int, default=16384, help="training images cached (the first ones)")
    parser.add_argument("--top-r", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=50, help="batches read per R (the median)")
    parser.add_argument("--keep", type=Path, help="keep the caches here (for bench_trainer.py --data)")
    parser.add_argument("--smoke", action="store_true", help="a tiny task rendered here, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        task = load_glyphs(40, include_system_fonts=False, min_faces=2, copies=1, image_size=16)
        args.rows, args.top_r, args.batch_size, args.batches = 64, [8], 16, 2
    elif args.data is None:
        parser.error("--data is required (or --smoke)")
    else:
        task = datasets.load_from_disk(str(args.data))
    train = task["train"]
    num_classes = train.features["label"].num_classes
    subset = train.select(range(min(args.rows, len(train))))
    teacher = hf_dis.timm_classifier("resnet10t", num_classes, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for top_r in args.top_r:
            folder = root / f"top_r_{top_r}"
            start = time.perf_counter()
            cached = cache_teacher_logits(teacher, subset, glyph_transform(training=False), top_r=top_r, batch_size=256)
            cache_s = time.perf_counter() - start
            cached.save_to_disk(str(folder))
            megabytes = folder_mb(folder)
            read_ms = read_batches_ms(datasets.load_from_disk(str(folder)), args.batch_size, args.batches)
            row = {"classes": num_classes, "top_r": top_r, "rows": len(subset), "mb": megabytes,
                   "bytes_per_row": megabytes * 2**20 / len(subset),
                   "projected_train_gb": megabytes / len(subset) * len(train) / 1024, "train_rows": len(train),
                   "batch_size": args.batch_size, "read_ms": read_ms,
                   "cache_s_per_1000_rows": 1000 * cache_s / len(subset)}  # fmt: skip
            rows.append(row)
            print(f"R={top_r}: {row['bytes_per_row']:.0f} B/row, {row['projected_train_gb']:.2f} GB for "
                  f"{len(train):,} rows, {read_ms:.1f} ms per batch of {args.batch_size}", flush=True)  # fmt: skip
    meta = {**run_info("cpu"), "data": str(args.data), "command": " ".join(argv or __import__("sys").argv[1:])}
    lines = [
        f"# The teacher cache at {num_classes:,} classes: size and read time ({meta['device']})",
        "",
        f"{meta['date']}, torch {meta['torch']}, hf_dis {meta['hf_dis']}. `benchmarks/bench_cache_read.py "
        f"{meta['command']}`. One view per image; the first {len(subset):,} training rows cached and saved, the whole "
        f"split ({len(train):,} rows) projected from the bytes per row. Reading: shuffled batches through "
        "`labelled_dataset` (PNG decoding, pad-and-crop, normalisation, the cache columns from the arrow table), "
        f"median of {args.batches}.",
        "",
        "| R | bytes / row | whole split (GB) | read a batch (ms) | batch |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['top_r']:,} | {r['bytes_per_row']:,.0f} | {r['projected_train_gb']:.2f} | {r['read_ms']:.1f} | "
              f"{r['batch_size']} |" for r in rows]  # fmt: skip
    write_results(args.out, "bench_cache_read", meta, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
