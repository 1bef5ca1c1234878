"""The main job on an embedded task, offline, with nothing but a pip install (a few minutes on 2 CPU cores).

Renders a glyph classification task from the fonts matplotlib ships (every character drawn by enough of its faces;
train and test fonts are disjoint families), trains a small teacher briefly, distils a smaller student with full KD
and with DIS, and prints the teacher's and both students' test accuracy, the share of classes DIS looked at, and
the time the student's head and loss take per step in both modes.

    python examples/quickstart.py                 # the default task, the same on every machine
    python examples/quickstart.py --system-fonts  # also the system's fonts: more classes (CJK fonts: thousands)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

import hf_dis
from hf_dis.data import image_transform, labelled_batches, load_glyphs
from hf_dis.diagnostics import head_step_ms
from hf_dis.metrics import classification_metrics


def training_options(args: argparse.Namespace, steps: int, name: str) -> dict:
    return dict(
        output_dir=os.path.join(args.output_dir, name), max_steps=steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=512, learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=20,
        weight_decay=0.05, logging_steps=max(1, steps // 5), save_strategy="no", report_to="none", seed=args.seed,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=args.quiet,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-classes", type=int, default=None, help="default: every character that qualifies")
    parser.add_argument("--system-fonts", action="store_true", help="use the system's fonts too")
    parser.add_argument("--teacher", default="resnet10t")
    parser.add_argument("--student", default="test_resnet")
    parser.add_argument("--teacher-steps", type=int, default=500)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--num-sampled", type=float, default=0.1, help="DIS: K, or a fraction of the classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="quickstart_output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    started = time.time()

    task = load_glyphs(args.num_classes, include_system_fonts=args.system_fonts, seed=args.seed)
    num_classes = task["train"].features["label"].num_classes
    test_fonts = sorted(set(task["test"]["font"]))
    print(
        f"Glyph task: {num_classes} classes (characters), {len(task['train'])} training and {len(task['test'])} test "
        f"images (half of them used); test fonts (never seen in training): {', '.join(test_fonts)}."
    )

    test_half = task["test"].select(range(0, len(task["test"]), 2))  # every other test image: enough, and faster

    def for_model(model):  # each model gets the batch in its own normalisation; the renderings are augmented already
        transform = labelled_batches(image_transform(model, training=False, image_size=32))
        return task["train"].with_transform(transform), test_half.with_transform(transform)

    teacher = hf_dis.timm_classifier(args.teacher, num_classes, args.seed)
    train, test = for_model(teacher)
    teacher_trainer = Trainer(
        model=teacher,
        args=TrainingArguments(**training_options(args, args.teacher_steps, "teacher"), remove_unused_columns=False),
        train_dataset=train,
        eval_dataset=test,
        compute_metrics=classification_metrics,
    )
    teacher_trainer.train()
    teacher_trainer.save_model()
    results = {"teacher": teacher_trainer.evaluate()["eval_accuracy"]}

    fractions = {}
    for sampler in ("full", "dis"):
        student = hf_dis.timm_classifier(args.student, num_classes, args.seed + 1)  # the same start for both
        train, test = for_model(student)  # DistillationTrainer re-normalises the batch for the teacher
        distillation = hf_dis.DistillationArguments(
            **training_options(args, args.student_steps, f"student-{sampler}"),
            sampler=sampler,
            num_sampled=None if sampler == "full" else args.num_sampled,
        )
        trainer = hf_dis.DistillationTrainer(
            model=student, args=distillation, teacher=teacher, train_dataset=train, eval_dataset=test,
            compute_metrics=classification_metrics,
        )  # fmt: skip
        trainer.train()
        results[f"student, {sampler} KD"] = trainer.evaluate()["eval_accuracy"]
        sampled = [log["num_classes"] for log in trainer.state.log_history if "num_classes" in log]
        fractions[sampler] = float(np.mean(sampled)) / num_classes if sampled else 1.0
        trainer.save_model()

    width = student.timm_model.num_features
    num_sampled = trainer.sampler.num_sampled  # the DIS trainer's K
    full_ms = head_step_ms(num_classes, width, args.batch_size)
    sampled_ms = head_step_ms(num_classes, width, args.batch_size, trainer.sampler)  # DIS, as trained
    print(f"\n{'model':<22}{'test accuracy':>14}")
    for name, value in results.items():
        print(f"{name:<22}{100 * value:>13.1f}%")
    print(
        f"\nDIS looked at {100 * fractions['dis']:.1f}% of the {num_classes} classes per step on its sampled steps "
        f"(K = {num_sampled} draws, plus the forced label and teacher top-1; every "
        f"{trainer.sampler.refit_every}th step is a full-KD probe)."
    )
    print(
        f"Student head + KD loss, forward and backward, batch {args.batch_size}, width {width}: full {full_ms:.2f} ms, "
        f"DIS {sampled_ms:.2f} ms per step, drawing included (at {num_classes} classes the head is a small share of "
        "the step, and drawing can cost more than the smaller head saves: see docs/method.md)."
    )
    print(f"Total time: {time.time() - started:.0f} s. Models saved in {args.output_dir}/.")


if __name__ == "__main__":
    main()
