"""Distil a teacher into a timm student on any `datasets` image dataset: a local image folder (one sub-folder per
class), a dataset saved with `save_to_disk`, or a Hub id. The generic path for your own data.

    python examples/distil_timm.py --dataset ./digits --teacher_model ./digits-teacher --student resnet18 \\
        --output_dir runs/digits-student
    python examples/distil_timm.py ... --resume_from_checkpoint true    # resume: the newest complete checkpoint

The teacher is a folder saved with `save_pretrained` (its `preprocessor_config.json`, when there, tells the trainer
how to feed it), a Hub id, or a timm name. The student trains from scratch at its own input size (`--image_size` to
change it), with defaults chosen for that (this script's, not the Trainer's): SGD with momentum 0.9, learning rate
0.05, cosine schedule with 5% warm-up, batch 64, 10 epochs, evaluation and a checkpoint every epoch (the newest 2
kept). The student is saved with its image processor and the data's class names, so
`transformers.pipeline("image-classification", model=OUTPUT_DIR)` loads it and answers with those names.
"""

import os
import sys
from dataclasses import dataclass, field

import timm
from transformers import HfArgumentParser, set_seed

from hf_dis import DistillationArguments, DistillationTrainer
from hf_dis.data import image_transform, labelled_batches, load_image_dataset, timm_image_processor
from hf_dis.metrics import classification_metrics


@dataclass
class ScriptArguments:
    dataset: str = field(metadata={"help": "An image folder (one sub-folder per class), a saved dataset or a Hub id."})
    student: str = field(default="resnet18", metadata={"help": "The student: a timm architecture name."})
    image_column: str = field(default="image", metadata={"help": "The dataset's image column."})
    image_size: int | None = field(default=None, metadata={"help": "Input size; default: the student's own."})
    augment: bool = field(
        default=True,
        metadata={"help": "Random crop and flip of the training images (timm's); false for images they would "
                  "change the class of (digits, characters)."},  # fmt: skip
    )


@dataclass
class ScriptTrainingArguments(DistillationArguments):
    """This script's defaults for a student trained from scratch (the Trainer's are for fine-tuning)."""

    learning_rate: float = field(default=0.05, metadata={"help": "Peak learning rate (this script: 0.05, SGD)."})
    optim: str = field(default="sgd", metadata={"help": "Optimizer (this script: sgd, momentum from optim_args)."})
    optim_args: str | None = field(default="momentum=0.9", metadata={"help": "Optimizer options."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule (this script: cosine)."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up: steps, or a fraction of them (0.05)."})
    weight_decay: float = field(default=5e-4, metadata={"help": "Weight decay (this script: 5e-4)."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch per device (this script: 64)."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch (this script: 256)."})
    num_train_epochs: float = field(default=10, metadata={"help": "Epochs (this script: 10)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "Evaluate every epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "Save a checkpoint every epoch (for resuming)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the newest 2 checkpoints."})
    logging_steps: float = field(default=50, metadata={"help": "Log every 50 steps."})


def main(argv: list[str]) -> dict[str, float]:
    script, args = HfArgumentParser((ScriptArguments, ScriptTrainingArguments)).parse_args_into_dataclasses(argv)
    args.label_column = args.label_column or "label"  # the trainer checks that whole column before training
    data = load_image_dataset(script.dataset, seed=args.seed)
    classes = data["train"].features[args.label_column]
    set_seed(args.seed)  # the student's initial weights: the same run twice is the same run
    student = timm.create_model(script.student, num_classes=classes.num_classes)
    train, test = (  # in the student's normalisation: the trainer converts the batch for the teacher
        data[split].with_transform(
            labelled_batches(
                image_transform(student, training=script.augment and split == "train", image_size=script.image_size),
                script.image_column,
                args.label_column,
            )
        )
        for split in ("train", "test")
    )
    trainer = DistillationTrainer(
        model=student,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        compute_metrics=classification_metrics,
        processing_class=timm_image_processor(student, image_size=script.image_size),  # saved with the student
    )
    trainer.train()  # resumes when --resume_from_checkpoint asks (a folder, or true for the newest checkpoint)
    metrics = trainer.evaluate()
    print(metrics)
    trainer.save_metrics("eval", metrics)  # eval_results.json in --output_dir
    trainer.create_model_card(dataset=os.path.basename(os.path.normpath(script.dataset)))  # its name, not a path
    trainer.save_model()
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
