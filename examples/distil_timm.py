"""Distil a timm teacher into a timm student with DIS, on a `datasets` image dataset (a Hub id or a local folder).

    python examples/distil_timm.py --dataset uoft-cs/cifar100 --image_column img --label_column fine_label \
        --student resnet18 --teacher_model ./cifar100-resnet50 --output_dir ./resnet18-dis --num_train_epochs 30
"""

from dataclasses import dataclass

import timm
from datasets import load_dataset
from transformers import HfArgumentParser

from hf_dis import DistillationArguments, DistillationTrainer
from hf_dis.data import image_transform, labelled_batches
from hf_dis.metrics import classification_metrics


@dataclass
class ScriptArguments:
    dataset: str
    student: str = "resnet18"
    image_column: str = "image"
    image_size: int | None = None  # default: the student's own input size


script, args = HfArgumentParser((ScriptArguments, DistillationArguments)).parse_args_into_dataclasses()
args.label_column = args.label_column or "label"  # the trainer checks that whole column before training
data = load_dataset(script.dataset)
student = timm.create_model(script.student, num_classes=data["train"].features[args.label_column].num_classes)
train, test = (  # in the student's normalisation: the trainer converts the batch for the teacher
    data[split].with_transform(
        labelled_batches(
            image_transform(student, training=split == "train", image_size=script.image_size),
            script.image_column,
            args.label_column,
        )
    )
    for split in ("train", "test")
)
trainer = DistillationTrainer(
    model=student, args=args, train_dataset=train, eval_dataset=test, compute_metrics=classification_metrics
)
trainer.train()
print(trainer.evaluate())
trainer.save_model()
