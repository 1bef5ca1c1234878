"""Distil a timm teacher into a timm student with DIS, on a `datasets` image dataset (a Hub id or a local folder).

    python examples/distil_timm.py --dataset uoft-cs/cifar100 --image_column img --label_column fine_label \
        --student resnet18 --teacher_model ./cifar100-resnet50 --output_dir ./resnet18-dis --num_train_epochs 30
"""

from dataclasses import dataclass

import timm
from datasets import load_dataset
from transformers import HfArgumentParser

from hf_dis import DistillationArguments, DistillationTrainer


@dataclass
class ScriptArguments:
    dataset: str
    student: str = "resnet18"
    image_column: str = "image"
    label_column: str = "label"
    image_size: int | None = None  # default: the student's own input size


script, args = HfArgumentParser((ScriptArguments, DistillationArguments)).parse_args_into_dataclasses()
data = load_dataset(script.dataset)
student = timm.create_model(script.student, num_classes=data["train"].features[script.label_column].num_classes)
config = timm.data.resolve_data_config(model=student)
if script.image_size:
    config["input_size"] = (3, script.image_size, script.image_size)


def batch_transform(is_training: bool):
    transform = timm.data.create_transform(**config, is_training=is_training)
    return lambda batch: {
        "pixel_values": [transform(image.convert("RGB")) for image in batch[script.image_column]],
        "labels": batch[script.label_column],
    }


train, test = data["train"].with_transform(batch_transform(True)), data["test"].with_transform(batch_transform(False))
accuracy = lambda prediction: {"accuracy": (prediction.predictions.argmax(-1) == prediction.label_ids).mean()}  # noqa: E731
trainer = DistillationTrainer(
    model=student, args=args, train_dataset=train, eval_dataset=test, compute_metrics=accuracy
)
trainer.train()
print(trainer.evaluate())
trainer.save_model()
