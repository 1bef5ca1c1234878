"""The main job on an embedded task, offline, with nothing but a pip install (minutes on 2 CPU cores).

Renders a glyph classification task from the fonts matplotlib ships (every character drawn by enough of its faces;
train and test fonts are disjoint families), trains a small teacher briefly (its test accuracy is printed as soon as
it is known), distils a smaller student with the default `sampler="auto"`, which times the student's head with DIS
and over all classes and says which it chose (at this task's 3,179 classes: full KD, the right choice there), then
times the same head at 100,000 classes, where sampling pays, so that both sides of the choice are shown.

    python examples/quickstart.py                 # the default task, the same on every machine
    python examples/quickstart.py --system-fonts  # also the system's fonts: more classes (CJK fonts: thousands)
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import Trainer, TrainingArguments

import hf_dis
from hf_dis.data import image_transform, labelled_batches, load_glyphs
from hf_dis.metrics import classification_metrics
from hf_dis.trainer.auto_sampler import time_sampler_choice


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
    parser.add_argument("--teacher-steps", type=int, default=200)
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--many-classes", type=int, default=100_000, help="the many-class head timed at the end")
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
    print(f"Teacher: {100 * results['teacher']:.1f}% top-1 on the test fonts ({time.time() - started:.0f} s so far).")

    student = hf_dis.timm_classifier(args.student, num_classes, args.seed + 1)
    train, test = for_model(student)  # DistillationTrainer re-normalises the batch for the teacher
    distillation = hf_dis.DistillationArguments(**training_options(args, args.student_steps, "student"))
    trainer = hf_dis.DistillationTrainer(  # sampler="auto" (the default): it prints what it chose and why
        model=student, args=distillation, teacher=teacher, train_dataset=train, eval_dataset=test,
        compute_metrics=classification_metrics,
    )  # fmt: skip
    trainer.train()
    results[f"student ({trainer.sampler.name} KD)"] = trainer.evaluate()["eval_accuracy"]
    trainer.save_model()
    print(f"\n{'model':<22}{'test accuracy':>14}")
    for name, value in results.items():
        print(f"{name:<22}{100 * value:>13.1f}%")

    width, batch = student.timm_model.num_features, args.batch_size
    print(f"\nThe student's head (classifier, KD loss, backward, update), width {width}, batch {batch}:")
    for classes in (num_classes, args.many_classes):
        dis = hf_dis.build_sampler("dis", classes, distillation.num_sampled_for(classes, "dis"))
        timed = time_sampler_choice(classes, width, batch, dis, temperature=distillation.temperature, device="cpu",
                                    optim="sgd", classifier_optimizer="row_sparse")  # fmt: skip
        ratio = timed.dis_ms / timed.full_ms
        print(f"  {classes:>7,} classes: full KD {timed.full_ms:7.1f} ms, DIS (K = {dis.num_sampled}) "
              f"{timed.dis_ms:7.1f} ms ({ratio:.2f}x): auto would take {timed.choice}")  # fmt: skip
    print("Sampling pays where the head is the step's cost: many classes (benchmarks/results/crossover.md).")
    print(f"Total time: {time.time() - started:.0f} s. Models saved in {args.output_dir}/.")


if __name__ == "__main__":
    main()
