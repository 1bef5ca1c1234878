"""Short distillation runs on the quickstart's glyph task, per sampler and scope (CPU; seeded; about 10 minutes).

One teacher (timm resnet10t) is trained, then the same student (timm test_resnet, same initialisation) is distilled
once per (sampler, scope) for the same number of steps, and evaluated on the full classifier over every class.
This is a short-budget comparison (about one epoch), not the method's reproduction study: it says which settings
learn fastest, which is what a default must get right. Writes `results/glyph_short_runs.jsonl` (one line per run),
`results/glyph_short_runs.md` and `results/glyph_short_runs.png`.

    python benchmarks/glyph_short_runs.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import Trainer, TrainingArguments

import hf_dis
from hf_dis.data import image_transform, labelled_batches, load_glyphs
from hf_dis.metrics import classification_metrics

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = (
    "full:per_example", "dis:per_example", "dis:batch", "ftis:per_example", "ftis:batch", "uniform:per_example",
    "uniform:batch",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="sampler:scope pairs")
    parser.add_argument("--teacher-steps", type=int, default=500)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--num-sampled", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work-dir", default="glyph_short_runs_output")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    task = load_glyphs(include_system_fonts=False, seed=args.seed)
    num_classes = task["train"].features["label"].num_classes
    test = task["test"].select(range(0, len(task["test"]), 2))

    def views(model):
        transform = labelled_batches(image_transform(model, training=False, image_size=32))
        return task["train"].with_transform(transform), test.with_transform(transform)

    def options(steps: int, name: str) -> dict:
        return dict(
            output_dir=f"{args.work_dir}/{name}", max_steps=steps, per_device_train_batch_size=128,
            per_device_eval_batch_size=512, learning_rate=2e-3, lr_scheduler_type="cosine", warmup_steps=20,
            weight_decay=0.05, logging_steps=50, save_strategy="no", report_to="none", seed=args.seed,
            use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip

    teacher = hf_dis.timm_classifier("resnet10t", num_classes, args.seed)
    train, evaluation = views(teacher)
    teacher_trainer = Trainer(
        model=teacher, args=TrainingArguments(**options(args.teacher_steps, "teacher"), remove_unused_columns=False),
        train_dataset=train, eval_dataset=evaluation, compute_metrics=classification_metrics,
    )  # fmt: skip
    teacher_trainer.train()
    teacher_accuracy = teacher_trainer.evaluate()["eval_accuracy"]

    environment = {
        "date": datetime.date.today().isoformat(),
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hf_dis": hf_dis.__version__,
    }
    rows = []
    for run in args.runs:
        sampler, scope = run.split(":")
        student = hf_dis.timm_classifier("test_resnet", num_classes, args.seed + 1)
        train, evaluation = views(student)
        distillation = hf_dis.DistillationArguments(
            **options(args.student_steps, f"{sampler}-{scope}"), sampler=sampler, sample_scope=scope,
            num_sampled=None if sampler == "full" else args.num_sampled,
        )  # fmt: skip
        trainer = hf_dis.DistillationTrainer(
            model=student, args=distillation, teacher=teacher, train_dataset=train, eval_dataset=evaluation,
            compute_metrics=classification_metrics,
        )  # fmt: skip
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        sampled = [log for log in trainer.state.log_history if "teacher_mass" in log]
        row = {
            "sampler": sampler,
            "scope": scope,
            "num_classes": num_classes,
            "num_sampled": None if sampler == "full" else trainer.sampler.num_sampled,
            "student_steps": args.student_steps,
            "accuracy": trainer.evaluate()["eval_accuracy"],
            "teacher_accuracy": teacher_accuracy,
            "teacher_mass": float(np.mean([log["teacher_mass"] for log in sampled])) if sampled else 1.0,
            "sampled_fraction": float(np.mean([log["num_classes"] for log in sampled])) / num_classes
            if sampled
            else 1.0,
            "train_seconds": round(seconds, 1),
            **environment,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_results(rows, args.out)


def write_results(rows: list[dict], out: Path) -> None:
    (out / "glyph_short_runs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    first = rows[0]
    lines = [
        f"# Short distillation runs on the glyph task ({first['num_classes']} classes)",
        "",
        f"{first['date']}, {first['device']}, torch {first['torch']}, transformers {first['transformers']}. Teacher "
        f"resnet10t ({100 * first['teacher_accuracy']:.1f}% test accuracy), student test_resnet, "
        f"{first['student_steps']} steps of batch 128 (about one epoch), the same initialisation for every run.",
        "",
        "| sampler | scope | test accuracy | teacher mass in S | classes in S | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['sampler']} | {row['scope']} | {100 * row['accuracy']:.1f}% | {row['teacher_mass']:.2f} | "
            f"{100 * row['sampled_fraction']:.1f}% | {row['train_seconds']} |"
        )
    (out / "glyph_short_runs.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 3.8))
    labels = [f"{row['sampler']}\n{row['scope'].replace('_', ' ')}" for row in rows]
    axis.bar(
        labels,
        [100 * row["accuracy"] for row in rows],
        color=["C0" if r["scope"] == "per_example" else "C1" for r in rows],
    )
    axis.axhline(100 * first["teacher_accuracy"], color="k", linestyle="--", label="teacher")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"Glyphs, {first['num_classes']} classes, {first['student_steps']} student steps")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "glyph_short_runs.png", dpi=120)


if __name__ == "__main__":
    main()
