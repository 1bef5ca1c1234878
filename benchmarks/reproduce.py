"""The method's comparison study: full KD against uniform, top-k, FTIS and DIS sampling at several sampled fractions,
over several seeds, plus the student trained from scratch, each run with the same recipe and budget; optionally the
floor (the same student with its head cut to the sampled set's size: the time no sampler can beat) and one teacher
cache that every distilled run reads (full KD included, so that the comparison is fair).

One YAML (or JSON) config per study (`benchmarks/studies/*.yaml`, read with `HfArgumentParser`): the task, the
data, the teacher (trained here once, or an existing folder), the student, the budget and the grid. Every run goes
through the library's recipes (`hf_dis.recipes`: `train_teacher`, `distill_cifar100` for classification,
`distill_market1501` for re-ID) and reports its last epoch's metrics (not the best epoch's). Results:
`results.jsonl` (one line per finished run, with its training time and peak memory; a rerun skips those, and
resumes a run stopped half-way from its newest checkpoint when its training options save some),
`results.md` (mean +- std over seeds), `results.png` (metric vs sampled fraction, one line per sampler, full KD and
scratch as bands) and `results_time.png` (metric against training time, one point per run), all in the study's
output folder. Every run trains in a process of its own, so that its peak memory is its own.

    python benchmarks/reproduce.py benchmarks/studies/glyphs_gb2312_classification.yaml
    python benchmarks/reproduce.py STUDY.yaml --jobs 8     # 8 student runs at a time (one GPU has room for many
                                                           # small students; each runs in its own process)
    python benchmarks/reproduce.py STUDY.yaml --report     # the table and plot of the runs finished so far (on
                                                           # the machine they ran on: it is named in the table)
    python benchmarks/reproduce.py STUDY.yaml --prepare    # only the teacher, its cache and the floor's tasks:
                                                           # the long shared part, or what other studies read
    python benchmarks/reproduce.py benchmarks/studies/smoke.yaml       # seconds: the test suite runs it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import resource
import statistics
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import datasets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from floor import floor_num_classes  # noqa: E402
from run_info import run_info  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from hf_dis.recipes import cache_teacher, distill_cifar100, distill_market1501, train_teacher  # noqa: E402

#: The runs without sampling a study makes per seed: the student from scratch, with full KD, and the floor (one per
#: sampled size: the student from scratch with its head cut to that many classes; its accuracy means nothing).
BASELINES = ("scratch", "full", "floor")
#: The metric a study reports per task, and a second one shown beside it.
METRICS = {"classification": ("eval_accuracy", "eval_top5"), "reid": ("eval_rank1", "eval_mAP")}


@dataclass
class Study:
    """A study's config (the keys of its YAML file).

    Args:
        name: the study's name (titles, file names).
        task: classification or reid.
        output_dir: where the runs and the results go.
        data: the recipes' data options (dataset, data_dir, glyph_classes, ...), as flags.
        teacher_model: the teacher's architecture (trained here) ...
        teacher_dir: ... or the folder of a trained teacher (then nothing is trained for it).
        teacher_options: training options of the teacher (flags of `hf-dis train-teacher`).
        student: the student's architecture.
        training: options of every student run (flags of the recipe: epochs, batch size, learning rate, ...).
        distillation: options of the distilled runs only (temperature, alpha, ...: the scratch run has no teacher).
        sampling: options of the sampled runs only (e.g. classifier_optimizer: row_sparse, which full KD, updating
            every row, does not need).
        samplers: sampled methods to compare.
        baselines: the runs without sampling, per seed: `scratch` and `full` (KD) by default, and `floor` on
            request (one per sampled size; needs a saved glyph task); [] for a study that only varies a sampled run's
            options (compare it with the baselines of the study it varies).
        fractions: sampled sizes: fractions of the classes in (0, 1), or numbers of classes K (integers >= 1).
        teacher_cache: options of `hf-dis cache-teacher` (e.g. {top_r: 1024}): the teacher's logits are cached once
            and every distilled run reads them (no teacher runs during training); None: a live teacher.
        teacher_cache_dir: the folder of an existing teacher cache (a study that varies another's runs reads that
            study's cache; then `teacher_cache` is unused and nothing is cached).
        seeds: seeds of the student runs (the teacher is trained once, with the first).
        method_training: options of one method's runs over `training` (e.g. {dis: {num_train_epochs: 3}}: a
            sampled run may train longer than full KD, in less time).
    """

    name: str
    task: str
    output_dir: str
    data: dict[str, object] = field(default_factory=dict)
    teacher_model: str = "resnet18"
    teacher_dir: str | None = None
    teacher_options: dict[str, object] = field(default_factory=dict)
    student: str = "resnet10t"
    training: dict[str, object] = field(default_factory=dict)
    distillation: dict[str, object] = field(default_factory=dict)
    sampling: dict[str, object] = field(default_factory=dict)
    samplers: list[str] = field(default_factory=lambda: ["uniform", "topk", "ftis", "dis"])
    baselines: list[str] = field(default_factory=lambda: ["scratch", "full"])
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2])
    teacher_cache: dict[str, object] | None = None
    teacher_cache_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    method_training: dict[str, dict[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in METRICS:
            raise ValueError(f"task must be one of {sorted(METRICS)}, got {self.task!r}.")
        if not set(self.baselines) <= set(BASELINES):
            raise ValueError(f"baselines must be among {list(BASELINES)}, got {self.baselines}.")
        sizes_ok = all(0 < size < 1 or (size >= 1 and float(size).is_integer()) for size in self.fractions)
        if not self.seeds or not sizes_ok:
            raise ValueError(
                f"need seeds, and fractions in (0, 1) or integers >= 1, got {self.seeds} and {self.fractions}."
            )
        if "floor" in self.baselines and (self.data.get("dataset") != "glyphs" or "data_dir" not in self.data):
            raise ValueError("the floor relabels a saved glyph task: set data: {dataset: glyphs, data_dir: ...}.")
        unknown = set(self.method_training) - {*self.baselines, *self.samplers}
        if unknown:
            raise ValueError(f"method_training names methods the study does not run: {sorted(unknown)}.")
        check_one_teacher(self)


def _in_scope(run: dict, scope: str) -> bool:
    """Whether the options of `scope` (a Study field, or method_training.METHOD) reach `run`."""
    distilled = run["method"] not in ("scratch", "floor")
    return {"training": True, "distillation": distilled, "sampling": distilled and run["fraction"] is not None}.get(
        scope, scope == f"method_training.{run['method']}"
    )


#: Options that name where a distilled run's teacher logits come from.
TEACHER_SOURCES = ("teacher_model", "teacher_cache")


def check_one_teacher(study: Study) -> None:
    """Refuse a study whose distilled runs would not all read the same teacher (or teacher cache): a teacher option
    among the options of some runs only (`sampling`, `method_training`) or of every run (`training`: scratch has no
    teacher). The study's own `teacher_model` / `teacher_dir` and `teacher_cache` / `teacher_cache_dir` are shared."""
    scopes = {"training": study.training, "distillation": study.distillation, "sampling": study.sampling}
    scopes.update({f"method_training.{method}": options for method, options in study.method_training.items()})
    for scope, options in scopes.items():
        named = [key for key in TEACHER_SOURCES if key in options]
        if named:
            affected = [run_key(run) for run in runs(study) if _in_scope(run, scope)]
            raise ValueError(
                f"{scope} sets {', '.join(named)}, so runs {', '.join(affected)} would read another teacher than the "
                "study's other distilled runs. Every distilled run reads one teacher: set the study's teacher_dir or "
                "teacher_cache / teacher_cache_dir instead."
            )


def code_version() -> str:
    """A short hash of the code a run trains with: hf_dis's sources and these benchmarks' (a frozen copy of the tree
    has no git history to name)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*(root / "hf_dis").rglob("*.py"), *(root / "benchmarks").glob("*.py")]):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def check_config_unchanged(study: Study, root: Path) -> None:
    """The config a study's first rows ran with is kept in `root/study_config.json`; resuming with another is refused,
    naming each changed option with its old and new value (rows of two configs in one table would compare
    different things)."""
    path, config = root / "study_config.json", json.loads(json.dumps(asdict(study)))
    if not path.is_file():
        path.write_text(json.dumps(config, indent=2))
        return
    first = json.loads(path.read_text())
    changed = [f"{key}: {first.get(key)!r} -> {config.get(key)!r}" for key in sorted({*first, *config})
               if first.get(key) != config.get(key)]  # fmt: skip
    if changed:
        raise SystemExit(
            f"{root} holds rows of this study run with another config ({'; '.join(changed)}). Restore the config, or "
            f"give the changed study another output_dir."
        )


def flags(options: dict[str, object]) -> list[str]:
    out = []
    for key, value in options.items():
        out += [f"--{key}", *(str(item) for item in value)] if isinstance(value, list) else [f"--{key}", str(value)]
    return out


def runs(study: Study) -> list[dict]:
    """Every student run of the grid, seed by seed (a study stopped early holds whole seeds): the baselines (scratch,
    full KD), then sampler x fraction."""
    grid = []
    for seed in study.seeds:
        grid += [{"method": method, "fraction": None, "seed": seed} for method in study.baselines if method != "floor"]
        if "floor" in study.baselines:
            grid += [{"method": "floor", "fraction": fraction, "seed": seed} for fraction in study.fractions]
        grid += [
            {"method": sampler, "fraction": fraction, "seed": seed}
            for sampler in study.samplers
            for fraction in study.fractions
        ]
    return grid


def run_key(run: dict) -> str:
    return f"{run['method']}-{run['fraction']}-{run['seed']}"


def resume_flags(folder: Path) -> list[str]:
    """The flags that make a run stopped with an earlier part of the study go on from its newest checkpoint (none
    for a run not started)."""
    return ["--resume_from_checkpoint", "true"] if any(folder.glob("checkpoint-*")) else []


def teacher_folder(study: Study, root: Path, *, train: bool = True) -> str:
    """The study's teacher: its `teacher_dir`, else `root/teacher`, trained there first when `train` and not yet
    trained."""
    if study.teacher_dir is not None:
        return study.teacher_dir
    folder = root / "teacher"
    if train and not (folder / "eval_results.json").is_file():
        options = ["--task", study.task, "--model", study.teacher_model, "--output_dir", str(folder)]
        options += resume_flags(folder)
        train_teacher.main([*options, "--seed", str(study.seeds[0]), *flags(study.data), *flags(study.teacher_options)])
    return str(folder)


def teacher_cache_folder(study: Study, root: Path, teacher: str) -> str | None:
    """The study's teacher cache: its `teacher_cache_dir`, else `root/teacher_cache`, made first when missing; None
    for a live teacher."""
    if study.teacher_cache_dir is not None:
        return study.teacher_cache_dir
    if study.teacher_cache is None:
        return None
    folder = root / "teacher_cache"
    if not (folder / "dataset_info.json").is_file():
        options = ["--task", study.task, "--teacher_model", teacher, "--output_dir", str(folder)]
        cache_teacher.main([*options, *flags(study.data), *flags(study.teacher_cache)])
    return str(folder)


def num_sampled(size: float) -> str:
    """The recipes' --num_sampled of a study's sampled size: an integer K, or a fraction of the classes."""
    return str(int(size)) if size >= 1 else str(size)


def floor_task(study: Study, root: Path, num_classes: int) -> str:
    """The study's saved glyph task relabelled to `num_classes` classes (label modulo that), saved once in `root`: the
    same images and loader as every other run, with a head of the sampled set's size."""
    folder = root / f"floor_task_{num_classes}"
    if not (folder / "dataset_dict.json").is_file():
        task = datasets.load_from_disk(str(study.data["data_dir"]))
        names = datasets.ClassLabel(names=[f"bucket {index}" for index in range(num_classes)])
        relabel = {"function": lambda labels: {"label": [label % num_classes for label in labels]}, "batched": True}
        # in memory: no cache files written into the study's data folder; only the labels are read
        relabelled = task.map(**relabel, input_columns="label", keep_in_memory=True, desc="floor labels")
        relabelled.cast_column("label", names).save_to_disk(str(folder))
    return str(folder)


def floor_classes(study: Study, size: float) -> int:
    """K' of a sampled size on the study's task (see `floor.floor_num_classes`)."""
    train = datasets.load_from_disk(str(study.data["data_dir"]))["train"]
    return floor_num_classes(size, train.features["label"].num_classes)


def run_student(study: Study, run: dict, teacher: str, root: Path) -> dict:
    """One student run through the recipes; its last evaluation, its speed and the peak memory of its process (each
    run has a process of its own: see `run_grid`)."""
    folder = root / run_key(run)
    training = {**study.training, **study.method_training.get(run["method"], {})}
    common = ["--output_dir", str(folder), "--seed", str(run["seed"]), *flags(training), *resume_flags(folder)]
    if run["method"] in ("scratch", "floor"):
        data = flags(study.data)
        if run["method"] == "floor":
            data = ["--dataset", "glyphs", "--data_dir", floor_task(study, root, floor_classes(study, run["fraction"]))]
        metrics = train_teacher.main(["--task", study.task, "--model", study.student, *data, *common])
    else:
        recipe = distill_cifar100 if study.task == "classification" else distill_market1501
        sampling = ["--sampler", run["method"]]
        if run["fraction"] is not None:
            sampling += ["--num_sampled", num_sampled(run["fraction"]), *flags(study.sampling)]
        cache = teacher_cache_folder(study, root, teacher)
        source = ["--teacher_model", teacher] if cache is None else ["--teacher_cache", cache]
        distilling = ["--student", study.student, *source, *sampling, *flags(study.distillation)]
        metrics = recipe.main([*distilling, *flags(study.data), *common])
    speed = json.loads((folder / "train_results.json").read_text())
    row = {**run, **{key: metrics[key] for key in METRICS[study.task]}}
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # kilobytes on Linux
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    speed_row = {"train_runtime": speed["train_runtime"], "train_steps_per_second": speed["train_steps_per_second"],
                 "epochs": speed.get("epoch")}  # fmt: skip
    device = "gpu" if torch.cuda.is_available() else "cpu"
    if f"train_mem_{device}_peaked_delta" in speed:  # skip_memory_metrics: false: the Trainer's own, training only
        peak["train_peak_memory_mb"] = (speed[f"train_mem_{device}_alloc_delta"]
                                        + speed[f"train_mem_{device}_peaked_delta"]) / 2**20  # fmt: skip
    curve = {}
    if (folder / "eval_curve.json").is_file():  # every evaluation against the seconds of training (EvaluationCurve)
        curve["curve"] = [point[:2] for point in json.loads((folder / "eval_curve.json").read_text())["points"]]
    return {**row, **speed_row, **peak, **curve}


def summarise(study: Study, rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each (method, fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["fraction"]), []).append(row)
    summary = []
    for (method, fraction), members in groups.items():
        entry = {"method": method, "fraction": fraction, "seeds": len(members)}
        for key in (*METRICS[study.task], "train_runtime", "peak_rss_mb"):
            values = [member[key] for member in members if key in member]
            if not values:  # rows written before the key existed
                continue
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def markdown(study: Study, summary: list[dict], info: dict) -> str:
    first, second = METRICS[study.task]
    full_time = next((entry["train_runtime"] for entry in summary if entry["method"] == "full"), None)
    lines = [
        f"# {study.name}\n",
        f"{info['date']}, {info['device']}, torch {info['torch']}, hf_dis {info['hf_dis']}. Last-epoch metrics, mean "
        "+- standard deviation over seeds; the floor's metrics are not comparable (it learns other labels: only its "
        "time counts).\n",
        f"| method | sampled size | seeds | {first} (%) | {second} (%) | training time (s) | x full KD "
        "| peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        size = "-" if entry["fraction"] is None else f"{entry['fraction']:g}"
        metrics = ["-", "-"]
        if entry["method"] != "floor":
            metrics = [f"{100 * entry[key]:.2f} +- {100 * entry[f'{key}_std']:.2f}" for key in (first, second)]
        ratio = "-" if full_time is None else f"{entry['train_runtime'] / full_time:.2f}"
        peak = f"{entry['peak_rss_mb']:.0f}" if "peak_rss_mb" in entry else "-"
        lines.append(
            f"| {entry['method']} | {size} | {entry['seeds']} | {metrics[0]} | {metrics[1]} | "
            f"{entry['train_runtime']:.0f} | {ratio} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def time_to_reach(curve: list[list[float]], target: float) -> float | None:
    """The seconds of training at which a run's curve first reaches `target` (None: never)."""
    return next((seconds for seconds, value in curve if value >= target), None)


def value_at(curve: list[list[float]], seconds: float) -> float | None:
    """A run's metric at its last evaluation within `seconds` of training (None: none by then)."""
    values = [value for point_seconds, value in curve if point_seconds <= seconds]
    return values[-1] if values else None


def time_to_accuracy(rows: list[dict], metric: str) -> list[str]:
    """The time-to-accuracy table, per seed: for each run with a curve, its training time to reach full KD's final
    metric less 0.5 point (and that time over full KD's own), and its metric at full KD's total training time."""
    lines = []
    for full in (row for row in rows if row["method"] == "full" and row.get("curve")):
        target, budget = full[metric] - 0.005, full["train_runtime"]
        full_reach = time_to_reach(full["curve"], target)
        lines += [
            f"\nTime to accuracy (seed {full['seed']}): the training time each run takes to first reach full KD's "
            f"final {metric} less 0.5 point ({100 * target:.2f}%), and its {metric} at full KD's whole training time "
            f"({budget:.0f} s).\n",
            "| run | epochs | time to reach (s) | x full KD's | at full KD's time (%) |",
            "|---|---|---|---|---|",
        ]
        for row in (row for row in rows if row["seed"] == full["seed"] and row.get("curve")):
            reach, at_budget = time_to_reach(row["curve"], target), value_at(row["curve"], budget)
            ratio = "-" if reach is None or not full_reach else f"{reach / full_reach:.2f}"
            lines.append(
                f"| {row['key']} | {row.get('epochs') or 0:.2f} | {'not reached' if reach is None else f'{reach:.0f}'}"
                f" | {ratio} | {'-' if at_budget is None else f'{100 * at_budget:.2f}'} |"
            )
    return lines


def plot_time(study: Study, rows: list[dict], path: Path) -> None:
    """The metric of each run against its training time: its curve of evaluations where it has one, else its last
    (the floor as a vertical line: time only)."""
    metric = METRICS[study.task][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        label = row["key"]
        if row["method"] == "floor":
            ax.axvline(row["train_runtime"], color="gray", linestyle="--", label=f"{label} (time only)")
        elif row.get("curve"):  # every evaluation of the run: accuracy against seconds of training
            seconds, values = zip(*row["curve"], strict=True)
            ax.plot(seconds, [100 * value for value in values], marker=".", label=label)
        else:
            ax.scatter(row["train_runtime"], 100 * row[metric], label=label)
    ax.set(xlabel="training time (s)", ylabel=f"{metric} (%)", title=study.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(study: Study, summary: list[dict], path: Path) -> None:
    metric = METRICS[study.task][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for entry in summary:
        if entry["fraction"] is None and entry["method"] != "floor":  # full KD and scratch: bands over the axis
            low, high = entry[metric] - entry[f"{metric}_std"], entry[metric] + entry[f"{metric}_std"]
            colour = "black" if entry["method"] == "full" else "gray"
            top = 100 * high if high > low else 100 * low + 0.05  # one seed: a thin line
            ax.axhspan(100 * low, top, alpha=0.25, color=colour, label=f"{entry['method']} (band)")
    for sampler in study.samplers:
        points = sorted((e["fraction"], e[metric], e[f"{metric}_std"]) for e in summary if e["method"] == sampler)
        if points:
            fractions, means, stds = zip(*points, strict=True)
            ax.errorbar(fractions, [100 * m for m in means], yerr=[100 * s for s in stds], marker="o", label=sampler)
    ax.set(
        xscale="log", xlabel="sampled size (fraction of the classes, or K)", ylabel=f"{metric} (%)", title=study.name
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def load_study(config_path: str) -> Study:
    """The study of a YAML or JSON config file."""
    parser = HfArgumentParser(Study)
    parse = parser.parse_json_file if config_path.endswith(".json") else parser.parse_yaml_file
    return parse(config_path)[0]


def set_start_method(method: str) -> None:
    """multiprocessing's default start method in this process (a bound method of its default context would be
    pickled with a copy of that context, and set the copy's)."""
    multiprocessing.set_start_method(method, force=True)


def run_grid(study: Study, teacher: str, root: Path, done: dict[str, dict], jobs: int) -> None:
    """Run every student run not in `done`, `jobs` at a time, appending each to results.jsonl as it finishes (an
    interrupted study resumes there) and printing a line with its metric (the recipes' own logs are often off)."""
    grid, code = runs(study), code_version()
    pending = [run for run in grid if run_key(run) not in done]
    earlier = sorted({row.get("code") for row in done.values()} - {code}, key=str)
    if earlier:
        print(f"the code changed since rows of this study were run ({earlier} -> {code}): each row names its own "
              "code version, and the table says so", flush=True)
    results = root / "results.jsonl"
    metric = METRICS[study.task][0]
    print(f"{len(pending)} of the study's {len(grid)} student runs to go ({root})", flush=True)

    def record(run: dict, row: dict) -> None:
        row = {"key": run_key(run), **row, "code": code}
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done[row["key"]] = row
        progress = f"[{len(done)}/{len(grid)}] {row['key']}: {metric} {100 * row[metric]:.2f}"
        print(f"{progress}, trained in {row['train_runtime']:.0f} s", flush=True)

    # Spawned, not forked: the parent may hold a CUDA context (it trained the teacher), which a forked child cannot
    # use. A spawned child makes spawn its own default; the initializer restores this platform's, so the data
    # loaders' workers inside it are started as usual (a spawned loader worker cannot take the recipes' transforms).
    # One run per process: its peak memory is its own.
    context = multiprocessing.get_context("spawn")
    platform_default = (multiprocessing.get_start_method(),)
    pool = ProcessPoolExecutor(
        jobs, context, initializer=set_start_method, initargs=platform_default, max_tasks_per_child=1
    )
    with pool:
        running = {pool.submit(run_student, study, run, teacher, root): run for run in pending}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                record(running.pop(future), future.result())


def report(study: Study, root: Path, done: dict[str, dict], teacher: str) -> None:
    """results.md, study.json and results.png from the finished runs; the machine named is this one (the recipes
    train on its GPU when it has one), so report where the study ran."""
    teacher_results = Path(teacher) / "eval_results.json"
    if not done or not teacher_results.is_file():
        raise SystemExit(f"nothing to report in {root}: no finished run, or no teacher results ({teacher_results}).")
    info = run_info("cuda" if torch.cuda.is_available() else "cpu")
    summary = summarise(study, list(done.values()))
    teacher_metrics = json.loads(teacher_results.read_text())
    teacher_name = study.teacher_model if study.teacher_dir is None else study.teacher_dir  # teacher_model unused then
    rows = list(done.values())
    codes = {row.get("code", "unrecorded") for row in rows}
    code_note = ""
    if len(codes) > 1:
        code_note = "\nThe code changed between this study's rows: " + ", ".join(
            f"{row['key']} {row.get('code', 'unrecorded')}" for row in rows
        ) + ".\n"
    (root / "results.md").write_text(
        markdown(study, summary, info)
        + "\n".join(time_to_accuracy(rows, METRICS[study.task][0]))
        + f"\nTeacher ({teacher_name}): {100 * teacher_metrics[METRICS[study.task][0]]:.2f}.\n"
        + code_note
    )
    (root / "study.json").write_text(json.dumps({"study": asdict(study), "run_info": info}, indent=2))
    plot(study, summary, root / "results.png")
    plot_time(study, list(done.values()), root / "results_time.png")
    print((root / "results.md").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the study's YAML or JSON file")
    parser.add_argument("--jobs", type=int, default=1, help="student runs at a time, each in its own process")
    parser.add_argument("--report", action="store_true", help="only write the results of the finished runs")
    parser.add_argument("--prepare", action="store_true",
                        help="only what the runs share: train the teacher, cache its logits, render the floor's tasks "
                        "(the study's settings for its runs are fixed by its first run, not by this)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}.")
    if args.prepare and args.report:
        parser.error("--prepare makes what the runs share and --report reads finished runs: give one.")
    study = load_study(args.config)
    root = Path(study.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    results = root / "results.jsonl"
    finished = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    done = {row["key"]: row for row in finished}
    teacher = teacher_folder(study, root, train=not args.report)
    if not args.report:  # what the runs share is made here once, not by parallel runs
        teacher_cache_folder(study, root, teacher)
        if "floor" in study.baselines:
            for size in study.fractions:
                floor_task(study, root, floor_classes(study, size))
        if args.prepare:
            print(f"prepared {root}: the teacher {teacher} and what the runs share; run again without --prepare")
            return
        check_config_unchanged(study, root)  # from the first run on: rows of one table compare one config
        run_grid(study, teacher, root, done, args.jobs)
    report(study, root, done, teacher)


if __name__ == "__main__":
    main()
