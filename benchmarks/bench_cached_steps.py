"""Training steps on a real teacher cache, as a study's runs take them: the recipes' glyph augmentation on the saved
images, the cache columns read by each loader path, `DistillationTrainer` for full KD and DIS (row-sparse classifier
updates), and the floor (the same student with a head of K' = K + 2 classes, trained from scratch on the labels
modulo K', reading no cache: what reproduce.py's floor runs cost per step).

Per run: the median optimizer step (between `on_step_begin` and `on_step_end`: forward, backward, updates), the
median time between steps (the loader's batch, the logging), and train_runtime per step. Loader paths for the
distilled runs: `arrow` (`hf_dis.data.labelled_dataset`: the cache rows taken from the arrow table as arrays) and
`python` (`with_transform(labelled_batches(...))`: the cache columns built as Python lists first). All runs are
measured one after the other in one process tree, so their ratios are side by side.

    python benchmarks/bench_cached_steps.py --cache reproduce_output/glyphs_cjk20k_cpu/teacher_cache
    python benchmarks/bench_cached_steps.py --smoke --out /tmp/x   # a tiny cache made here, seconds (tests run it)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import datasets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from floor import floor_num_classes  # noqa: E402
from run_info import run_info, write_results  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import hf_dis  # noqa: E402
from hf_dis.data import labelled_batches, labelled_dataset, padded_crop_transform  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class StepClock(TrainerCallback):
    """Milliseconds of each optimizer step, and of each gap between one step's end and the next one's start."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.gaps: list[float] = []
        self._start = self._end = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        if self._end is not None:
            self.gaps.append(1000 * (self._start - self._end))

    def on_step_end(self, args, state, control, **kwargs):
        self._end = time.perf_counter()
        self.steps.append(1000 * (self._end - self._start))


def glyph_augmentation() -> object:
    """The classification recipe's training transform for 32 px glyphs (pad 4 and crop, no flip)."""
    return padded_crop_transform(
        image_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, training=True, hflip=0.0, padding=4
    )


def build_trainer(cache: datasets.Dataset, run: dict, args: argparse.Namespace, output_dir: str) -> Trainer:
    options = dict(
        per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=0.1, optim="sgd",
        use_cpu=True, dataloader_num_workers=0, logging_steps=50, report_to="none", save_strategy="no",
        disable_tqdm=True, seed=0, remove_unused_columns=False,
    )  # fmt: skip
    num_classes = cache.features["label"].num_classes
    transform = glyph_augmentation()
    if run["method"] == "floor":
        head = floor_num_classes(run["num_sampled"], num_classes)
        relabelled = cache.select_columns(["image", "label"]).map(
            lambda label: {"label": label % head}, input_columns="label", desc="floor labels"
        )
        model = hf_dis.timm_classifier(args.student, head, seed=0)
        train = relabelled.with_transform(labelled_batches(transform))
        return Trainer(model=model, args=TrainingArguments(output_dir, **options), train_dataset=train)
    sampled = run["method"] != "full"
    training = hf_dis.DistillationArguments(
        output_dir, sampler=run["method"], num_sampled=run["num_sampled"] if sampled else None,
        classifier_optimizer="row_sparse" if sampled else "dense", temperature=2.0, **options,
    )  # fmt: skip
    if run["loader"] == "arrow":
        train = labelled_dataset(cache, transform)
    else:
        train = cache.with_transform(labelled_batches(transform))
    student = hf_dis.timm_classifier(args.student, num_classes, seed=0)
    return hf_dis.DistillationTrainer(student, training, train_dataset=train)


def time_run(cache: datasets.Dataset, run: dict, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(cache, run, args, output_dir)
        clock = StepClock()
        trainer.add_callback(clock)
        runtime = trainer.train().metrics["train_runtime"]
    warmup = args.warmup
    return {
        **run,
        "median_step_ms": statistics.median(clock.steps[warmup:]),
        "median_between_steps_ms": statistics.median(clock.gaps[warmup:]),
        "train_runtime_ms_per_step": 1000 * runtime / args.steps,
    }


def smoke_cache(folder: Path) -> Path:
    """A tiny glyph task's training set with a teacher cache (random-weight teacher), saved as cache-teacher does."""
    task = hf_dis.data.load_glyphs(num_classes=40, image_size=32, seed=0, include_system_fonts=False)
    teacher = hf_dis.timm_classifier("resnet10t", 40, seed=1)
    transform = padded_crop_transform(image_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, training=False)
    cached = hf_dis.data.cache_teacher_logits(teacher, task["train"], transform, top_r=16, batch_size=64)
    cached.save_to_disk(folder / "cache")
    return folder / "cache"


def markdown(rows: list[dict], meta: dict) -> str:
    full = {row["loader"]: row for row in rows if row["method"] == "full"}
    floor = next((row for row in rows if row["method"] == "floor"), None)

    def per_step(row: dict) -> float:
        return row["train_runtime_ms_per_step"]

    header = (
        f"# Training steps on a teacher cache\n\n{meta['date']}, {meta['device']}, torch {meta['torch']}, "
        f"transformers {meta['transformers']}, timm {meta['timm']}. {meta['student']} student, {meta['classes']:,} "
        f"classes, cache of the top {meta['top_r']:,} (`{meta['cache']}`), batch {meta['batch_size']}, "
        f"{meta['steps']} steps per run (the first {meta['warmup']} left out of the medians). Milliseconds; "
        "x full: train_runtime per step against full KD's with the same loader; share of the floor's saving: "
        "(full - run) / (full - floor), per step.\n\n"
        "| run | K | loader | median step | between steps | train_runtime per step | x full | share of the floor's "
        "saving |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        reference = full.get(row["loader"] or "arrow")
        ratio = share = "-"
        if reference is not None:
            ratio = f"{per_step(row) / per_step(reference):.2f}"
            if floor is not None and row["method"] != "floor":
                gap = per_step(reference) - per_step(floor)
                share = f"{(per_step(reference) - per_step(row)) / gap:.0%}" if gap > 0 else "-"
        lines.append(
            f"| {row['method']} | {row['num_sampled'] or '-'} | {row.get('loader') or '-'} "
            f"| {row['median_step_ms']:.1f} | {row['median_between_steps_ms']:.1f} | {per_step(row):.1f} "
            f"| {ratio} | {share} |"
        )
    return header + "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    labels = [f"{row['method']}\nK={row['num_sampled'] or '-'}\n{row.get('loader') or ''}" for row in rows]
    steps = [row["median_step_ms"] for row in rows]
    figure, axis = plt.subplots(figsize=(1.3 * len(rows) + 2, 3.8))
    axis.bar(labels, steps, label="median step")
    axis.bar(labels, [row["median_between_steps_ms"] for row in rows], bottom=steps, label="between steps")
    axis.plot(labels, [row["train_runtime_ms_per_step"] for row in rows], "ko", label="train_runtime per step")
    axis.set_ylabel("ms per optimizer step")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="a training set with a teacher cache (hf-dis cache-teacher)")
    parser.add_argument("--student", default="resnet10t")
    parser.add_argument("--num-sampled", type=int, nargs="+", default=[64, 256], help="DIS's K per run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per run (DIS probes every 50)")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the medians")
    parser.add_argument("--name", default="bench_cached_steps")
    parser.add_argument("--smoke", action="store_true", help="a tiny cache made here: the test suite's check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            args.cache, args.num_sampled, args.batch_size, args.steps, args.warmup = (
                smoke_cache(Path(scratch)),
                [4],
                16,
                4,
                1,
            )
        if args.cache is None:
            parser.error("--cache is required (or --smoke)")
        cache = datasets.load_from_disk(str(args.cache))
        info = hf_dis.data.teacher_cache_info(cache) or {}
        runs = [{"method": "full", "num_sampled": None, "loader": loader} for loader in ("arrow", "python")]
        for k in args.num_sampled:
            runs += [{"method": "dis", "num_sampled": k, "loader": loader} for loader in ("arrow", "python")]
        runs += [{"method": "floor", "num_sampled": k, "loader": None} for k in args.num_sampled[:1]]
        rows = []
        for run in runs:
            rows.append(time_run(cache, run, args))
            print(rows[-1], flush=True)
    meta = {
        **run_info("cpu"), "cache": str(args.cache), "classes": cache.features["label"].num_classes,
        "top_r": info.get("top_r"), "student": args.student, "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup,
    }  # fmt: skip
    write_results(args.out, args.name, meta, rows, markdown(rows, meta))
    plot(rows, args.out / f"{args.name}.png")


if __name__ == "__main__":
    main()
