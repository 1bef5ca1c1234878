"""Training steps of `DistillationTrainer` itself, sampler by sampler: what the Trainer-level path adds (drawing,
the sampled head, the logged statistics of the sampled set, DIS's full-distillation probes and refits) to the
hand-written steps that bench_step times. Per sampler: the median step, the mean of DIS's probe steps (every
`dis_refit_every` steps, and step 0) and of the other steps, the median time between steps (the loader's next batch,
the logging), and the Trainer's train_runtime per step (its loop with the data loading, without the model card that
`DistillationTrainer.train` then writes).

Random images and labels held in memory (no loader processes), random-weight timm models; each step is timed by a
callback between `on_step_begin` and `on_step_end`, waiting for the GPU at both ends. With `--cached R` no teacher
runs: random 32 px PNG images carry a teacher cache of their top R classes, written by
`hf_dis.data.cache_teacher_logits` (a random-weight teacher) and read through `labelled_dataset` with the glyph
augmentation, as a real cache is; full KD reads it too. With
`--data` the runs read a real training set with its teacher cache (what `hf-dis cache-teacher` saves, such as a
study's `teacher_cache` folder) as a study's runs do: through `hf_dis.data.labelled_dataset`, with the recipes'
32 px glyph augmentation. `--floor` adds the limit no sampler can beat: the same student and data with a head of
K' = K + 2 classes (K draws, the label and the teacher's top class), trained with full KD (on `--data`: from scratch,
on the labels modulo K', reading no cache, as a study's floor runs). One more column counts the ATen
operators one step dispatches, forward, backward and optimizer (the third step: not a DIS probe, not the step after
one, which recomputes the refitted proposal, not logged; left out of the timings): on a GPU all but the views launch
a kernel, and where the host's launches bound the step (small models at 32 px) that count is what a sampled step
adds to full KD's. hf_dis's value checks run on CPU tensors only: set `HF_DIS_CHECK_VALUES=0` for a CPU count that
matches a GPU's.

    python benchmarks/bench_trainer.py                    # GPU: ResNet-10t student, ResNet-18 teacher, 32 px,
                                                          # C = 3,755 (GB2312 level 1), batch 256, bf16, 2% and 10%
    python benchmarks/bench_trainer.py --profile          # also: each run's top operators over 20 steps, and its
                                                          # step part by part (data, teacher, sampler, backbone,
                                                          # head, loss, backward, optimizer)
    python benchmarks/bench_trainer.py --classes 100 --compile-loss   # C = 100, the trainer's compile_loss on
                                                          # (no operator count then: compiled code fuses them)
    python benchmarks/bench_trainer.py --device cpu --classes 20000 --fractions 64 --samplers full dis --cached 1024 \
        --floor --classifier-optimizer row_sparse --batch-size 128 --steps 40   # from a cache, beside the floor
    python benchmarks/bench_trainer.py --device cpu --data reproduce_output/glyphs_cjk20k_cpu/teacher_cache \
        --fractions 64 256 --samplers full dis --floor --classifier-optimizer row_sparse --batch-size 128 --steps 80
    python benchmarks/bench_trainer.py --smoke --device cpu --out /tmp/x   # tiny sizes, seconds (the tests run it)
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
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from floor import floor_num_classes  # noqa: E402
from run_info import run_info, write_results  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import hf_dis  # noqa: E402
from hf_dis.data import labelled_batches, labelled_dataset, padded_crop_transform  # noqa: E402
from hf_dis.step_parts import step_profile  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("full", "uniform", "ftis", "dis")
PROFILE_ORDER = ("dis", "ftis", "uniform", "full", "floor")


class StepTimer(TrainerCallback):
    """Milliseconds of every optimizer step, and of the time from its end to the next step's start, keyed by the
    global step it started at."""

    def __init__(self, device: torch.device) -> None:
        self.synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.times: dict[int, float] = {}
        self.gaps: dict[int, float] = {}
        self._start = 0.0
        self._end: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.synchronize()
        self._start = time.perf_counter()
        if self._end is not None:
            self.gaps[state.global_step] = 1000 * (self._start - self._end)

    def on_step_end(self, args, state, control, **kwargs):
        self.synchronize()
        self._end = time.perf_counter()
        self.times[state.global_step - 1] = 1000 * (self._end - self._start)


#: The step whose operators are counted (0-based global step): not a DIS probe (0, 50, ...) nor the step after one,
#: not logged (50, ...).
COUNTED_STEP = 2


class CountOperators(TrainerCallback):
    """Counts the operators of optimizer step `COUNTED_STEP`."""

    def __init__(self) -> None:
        self.counter = hf_dis.diagnostics.OperatorCounter()
        self.count: int | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == COUNTED_STEP:
            self.counter.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == COUNTED_STEP + 1:
            self.counter.__exit__(None, None, None)
            self.count = self.counter.total


class RandomImages(torch.utils.data.Dataset):
    """Seeded random images and labels, held in memory: the steps time the trainer, not a loader."""

    def __init__(self, count: int, size: int, num_classes: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 3, size, size, generator=generator)
        self.labels = torch.randint(num_classes, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


def cached_images(count: int, size: int, num_classes: int, top_r: int) -> datasets.Dataset:
    """Seeded random grey images (PNG, as a rendered glyph task stores them) and labels, with a teacher cache of their
    top `top_r` classes written by `hf_dis.data.cache_teacher_logits` (a random-weight ResNet-10t teacher: the values
    do not change the timings) and read as a training run reads it (`labelled_dataset`, the glyph augmentation)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(num_classes, (count,), generator=generator).tolist()
    pixels = (255 * torch.rand(count, size, size, generator=generator)).to(torch.uint8).numpy()
    images = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image) for image in pixels], "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    teacher = hf_dis.timm_classifier("resnet10t", num_classes, seed=1)
    evaluation = glyph_transform(training=False, size=size)
    cached = hf_dis.data.cache_teacher_logits(teacher, images, evaluation, top_r=top_r, batch_size=256)
    return labelled_dataset(cached, glyph_transform(size=size))


def glyph_transform(training: bool = True, size: int = 32) -> object:
    """The classification recipe's transform for glyphs (pad 4 and crop for training, no flip)."""
    return padded_crop_transform(
        image_size=(size, size), mean=(0.5,) * 3, std=(0.5,) * 3, training=training, hflip=0.0, padding=4
    )


def floor_trainer(data: datasets.Dataset, args: argparse.Namespace, head: int, options: dict) -> Trainer:
    """A study's floor run on `--data`: the student with a `head`-class head, from scratch on the labels modulo
    `head`, reading no cache."""
    relabelled = data.select_columns(["image", "label"]).map(
        lambda label: {"label": label % head}, input_columns="label", desc="floor labels"
    )
    model = hf_dis.timm_classifier(args.student, head, seed=0)
    train = relabelled.with_transform(labelled_batches(glyph_transform()))
    return Trainer(model=model, args=TrainingArguments(**options), train_dataset=train)


def build_trainer(args: argparse.Namespace, sampler: str, fraction: float | None, steps: int, output_dir: str):
    """A `DistillationTrainer` of random-weight timm models, SGD, no checkpoints, logging every 50 steps; from a
    teacher cache with `--cached` or `--data`; sampler "floor": the same student with a head of K' = K + 2 classes
    (K = `fraction`)."""
    classes = args.data.features["label"].num_classes if args.data is not None else args.classes
    options = dict(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, max_steps=steps, learning_rate=0.1,
        optim="sgd", bf16=args.device == "cuda", use_cpu=args.device == "cpu", dataloader_num_workers=0,
        logging_steps=50, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
        remove_unused_columns=False,  # the cache columns are not the model's arguments
    )  # fmt: skip
    if sampler == "floor":
        classes = floor_num_classes(fraction, classes)
        if args.data is not None:
            return floor_trainer(args.data, args, classes, options)
    student = hf_dis.timm_classifier(args.student, classes, seed=0)
    teacher = None if args.cached or args.data is not None else hf_dis.timm_classifier(args.teacher, classes, seed=1)
    sampled = sampler not in ("full", "floor")
    training = hf_dis.DistillationArguments(
        sampler="full" if sampler == "floor" else sampler,
        num_sampled=fraction if sampled else None,
        classifier_optimizer=args.classifier_optimizer if sampled else "dense",
        temperature=2.0,
        compile_loss=args.compile_loss,
        **options,
    )
    count = args.batch_size * 8
    if args.data is not None:
        dataset = labelled_dataset(args.data, glyph_transform())
    elif args.cached:
        dataset = cached_images(count, args.image_size, classes, min(args.cached, classes))
    else:
        dataset = RandomImages(count, args.image_size, classes)
    return hf_dis.DistillationTrainer(student, training, teacher=teacher, train_dataset=dataset)


def time_run(args: argparse.Namespace, sampler: str, fraction: float | None) -> dict:
    """One training run of `args.steps` steps: the statistics of its timed steps (after the warm-up)."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(args, sampler, fraction, args.steps, output_dir)
        timer, operators = StepTimer(device), CountOperators()
        trainer.add_callback(timer)
        if not args.compile_loss:  # a dispatch mode sees the operators that compiled code fuses away
            trainer.add_callback(operators)
        runtime_ms = 1000 * trainer.train().metrics["train_runtime"] / args.steps  # the loop's, not the card's
    sampler_used = getattr(trainer, "sampler", None)  # none in a floor run on --data (a plain Trainer)
    refit_every = None if sampler_used is None else sampler_used.refit_every
    head = trainer.model.config.num_labels if sampler_used is None else None
    timed = {step: ms for step, ms in timer.times.items() if step >= args.warmup and step != COUNTED_STEP}
    probes = [ms for step, ms in timed.items() if refit_every is not None and step % refit_every == 0]
    others = [ms for step, ms in timed.items() if refit_every is None or step % refit_every != 0]
    return {
        "sampler": sampler,
        "fraction": fraction,
        "num_sampled": head or sampler_used.num_sampled,
        "classes": head or sampler_used.num_classes,
        "median_step_ms": statistics.median(timed.values()),
        "median_between_steps_ms": statistics.median(ms for step, ms in timer.gaps.items() if step > args.warmup),
        "mean_other_step_ms": statistics.fmean(others),
        "mean_probe_step_ms": statistics.fmean(probes) if probes else None,
        "probe_steps": len(probes),
        "operators_per_step": operators.count,
        "train_runtime_ms_per_step": runtime_ms,
    }


def median_row(repeats: list[dict]) -> dict:
    """One run's row over its rounds: each timing the median of the rounds', with every round's train_runtime per
    step kept beside it."""
    row = dict(repeats[0])
    for key, value in row.items():
        if key.endswith("_ms") and value is not None:
            row[key] = statistics.median(repeat[key] for repeat in repeats)
    row["train_runtime_ms_per_step"] = statistics.median(repeat["train_runtime_ms_per_step"] for repeat in repeats)
    row["rounds_train_runtime_ms_per_step"] = [repeat["train_runtime_ms_per_step"] for repeat in repeats]
    return row


def profile_run(args: argparse.Namespace, sampler: str, fraction: float | None) -> tuple[str, dict[str, float]]:
    """The operators of 20 training steps (after a 10-step warm-up), by self time on the device and on the host
    (each table's footer totals the 20 steps: the device total is what the steps ask of a GPU that other processes
    share, whatever their wall time), and the host's milliseconds per step of each part (`step_profile`)."""
    cuda = args.device == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(args, sampler, fraction, 30, output_dir)
        schedule = torch.profiler.schedule(wait=0, warmup=10, active=20, repeat=1)
        with torch.profiler.profile(activities=activities, schedule=schedule) as profiler:

            class Step(TrainerCallback):
                def on_step_end(self, *_, **__):
                    profiler.step()

            trainer.add_callback(Step())
            trainer.train()
    tables = [("self_device_time_total", "device")] if cuda else []
    tables.append(("self_cpu_time_total", "host"))
    events = profiler.key_averages()
    text = "\n".join(
        f"by {where} time:\n" + events.table(sort_by=sort_by, row_limit=10, max_name_column_width=40)
        for sort_by, where in tables
    )
    return text, step_profile(profiler.events(), steps=20)


#: The parts of a step in the profile table, in the order a step runs them.
PROFILE_PARTS = ("data", "teacher", "sampler", "backbone", "head", "loss", "backward", "optimizer", "other", "step")


def profile_markdown(rows: list[dict], meta: dict) -> str:
    """The step profile per run: host milliseconds per step of each part (`hf_dis.step_parts.step_profile`)."""
    lines = [
        "# One step, part by part",
        "",
        f"{meta['date']}, {meta['device']}, torch {meta['torch']}, transformers {meta['transformers']}, timm "
        f"{meta['timm']}. {meta['student']} student, {meta['classes']} classes, batch {meta['batch_size']}; host "
        "milliseconds per step over 20 profiled steps (after 10), from the profiler's events: backbone is the "
        "student's forward less its classifier (head: its forward only; the backward of both is in backward); "
        "other is the step's remainder (the Trainer's own work, the profiler's overhead). A floor run on a plain "
        "Trainer marks no forward parts: its forward and loss fall in other.",
        "",
        "| run | K | " + " | ".join(PROFILE_PARTS) + " |",
        "|---|---|" + "---|" * len(PROFILE_PARTS),
    ]
    for row in rows:
        parts = " | ".join(f"{row['profile'][part]:.1f}" for part in PROFILE_PARTS)
        sampled = "-" if row["num_sampled"] is None else f"{row['num_sampled']:g}"
        lines.append(f"| {row['sampler']} | {sampled} | {parts} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], meta: dict) -> str:
    cached = f", no teacher: a cache of the top {meta['cached']} classes" if meta.get("cached") else ""
    if meta.get("data"):
        cached = f", no teacher: the training set and teacher cache `{meta['data']}` (top {meta['top_r']} classes)"
    teacher = "" if cached else f", {meta['teacher']} teacher"
    rounds = f", the median of {meta['rounds']} interleaved rounds" if meta.get("rounds", 1) > 1 else ""
    header = (
        f"# DistillationTrainer steps\n\n{meta['date']}, {meta['device']}, torch {meta['torch']}, transformers "
        f"{meta['transformers']}, timm {meta['timm']}. {meta['student']} student{teacher}, "
        f"{meta['classes']} classes, {meta['image_size']} px, batch {meta['batch_size']}, {meta['steps']} steps "
        f"(the first {meta['warmup']} untimed){', the loss compiled' if meta['compile_loss'] else ''}"
        f"{rounds}"
        f"{cached}; sampled runs' classifier updates: {meta.get('classifier_optimizer', 'dense')}. Milliseconds per "
        "optimizer step; floor: the student with a head of K' = K + 2 classes; x full: train_runtime per step against "
        "full KD's; share of the floor's saving: (full - run) / (full - floor) for the floor of the same K, from "
        "train_runtime per step.\n\n"
        "| sampler | classes | K | median step | other steps (mean) | DIS probe steps (mean, count) "
        "| between steps | train_runtime per step | x full | share of the floor's saving | operators per step |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    full = next((row["train_runtime_ms_per_step"] for row in rows if row["sampler"] == "full"), None)
    floors = {row["fraction"]: row["train_runtime_ms_per_step"] for row in rows if row["sampler"] == "floor"}
    lines = []
    for row in rows:
        probe = "-" if row["mean_probe_step_ms"] is None else f"{row['mean_probe_step_ms']:.2f} ({row['probe_steps']})"
        per_step = row["train_runtime_ms_per_step"]
        ratio = "-" if full is None else f"{per_step / full:.2f}"
        saving, floor = "-", floors.get(row["fraction"])  # against the floor of the same K
        if full is not None and floor is not None and full > floor and row["sampler"] not in ("full", "floor"):
            saving = f"{(full - per_step) / (full - floor):.0%}"
        lines.append(
            f"| {row['sampler']} | {row['classes']} | {row['num_sampled']} | {row['median_step_ms']:.2f} | "
            f"{row['mean_other_step_ms']:.2f} | {probe} | {row['median_between_steps_ms']:.2f} | {per_step:.2f} | "
            f"{ratio} | {saving} | {'-' if row['operators_per_step'] is None else row['operators_per_step']} |"
        )
    return header + "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    labels = [f"{row['sampler']}\nK={row['num_sampled']}" for row in rows]
    figure, axis = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.5))
    steps = [row["median_step_ms"] for row in rows]
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, default=3755)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.1])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--student", default="resnet10t")
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=160, help="optimizer steps per run (DIS probes every 50)")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the statistics")
    parser.add_argument("--rounds", type=int, default=1, help="every run this many times, interleaved: medians")
    parser.add_argument("--profile", action="store_true",
                        help="each run's top operators (bench_trainer_profile.txt) and its step part by part "
                        "(bench_trainer_profile.md)")  # fmt: skip
    parser.add_argument("--compile-loss", action="store_true", help="the trainer's compile_loss (torch.compile)")
    parser.add_argument("--cached", type=int, default=0, help="R: no teacher, cached top-R logits per image")
    parser.add_argument("--data", type=Path, help="no teacher: a training set with its teacher cache (cache-teacher)")
    parser.add_argument("--floor", action="store_true", help="also the floor: full KD with a head of K + 2 classes")
    parser.add_argument("--classifier-optimizer", default="dense", choices=("dense", "row_sparse"),
                        help="the sampled runs' classifier_optimizer")  # fmt: skip
    parser.add_argument(
        "--start-at", type=float, help="Unix time at which to start (processes that share one GPU start together)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the test suite's check that this runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.classes, args.batch_size, args.image_size, args.steps, args.warmup = 40, 8, 32, 6, 0
        args.student = args.teacher = "test_resnet.r160_in1k"
    meta = {**run_info(args.device), **{key: getattr(args, key) for key in ("student", "teacher")}}
    meta["classes"] = args.classes
    if args.data is not None:
        if args.cached:
            parser.error("--data and --cached are two sources of teacher-cache columns: give one")
        meta["data"], args.data = str(args.data), datasets.load_from_disk(str(args.data))
        info = hf_dis.data.teacher_cache_info(args.data) or {}
        meta.update(classes=args.data.features["label"].num_classes, top_r=info.get("top_r"), image_size=32)
    meta.setdefault("image_size", args.image_size)
    meta.update(batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, rounds=args.rounds)
    meta.update(compile_loss=args.compile_loss, cached=args.cached, classifier_optimizer=args.classifier_optimizer)
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    runs = [
        (sampler, fraction)
        for sampler in [*args.samplers, *(["floor"] if args.floor else [])]
        for fraction in ([None] if sampler == "full" else args.fractions)
    ]
    rounds: list[list[dict]] = []
    for _ in range(args.rounds):  # interleaved, so that a slow spell of the machine falls on every run alike
        rounds.append([])
        for sampler, fraction in runs:
            rounds[-1].append(time_run(args, sampler, fraction))
            rows = [median_row([done[i] for done in rounds if len(done) > i]) for i in range(len(rounds[0]))]
            write_results(args.out, "bench_trainer", meta, rows, markdown(rows, meta))  # a run cut short keeps these
    plot(rows, args.out / "bench_trainer.png")
    print(markdown(rows, meta), flush=True)
    if args.profile:
        reports, profiles = [], []
        for sampler, fraction in sorted(runs, key=lambda run: PROFILE_ORDER.index(run[0])):  # DIS first: a time
            text, parts = profile_run(args, sampler, fraction)  # box may cut the rest
            reports.append(f"=== {sampler}, fraction {fraction}\n{text}")
            profiles.append({"sampler": sampler, "num_sampled": fraction, "profile": parts})
            (args.out / "bench_trainer_profile.txt").write_text("\n".join(reports) + "\n")
            write_results(args.out, "bench_trainer_profile", meta, profiles, profile_markdown(profiles, meta))
            print(reports[-1], flush=True)


if __name__ == "__main__":
    main()
