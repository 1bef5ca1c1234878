"""Run by tests/test_trainer.py under `accelerate launch --multi_gpu --num_processes 2`: 4 DIS steps on 2 gloo ranks,
then each rank writes its sampler state and a parameter checksum to <out>/rank<i>.json."""

import json
import sys

import timm
import torch

from hf_dis import DistillationArguments, DistillationTrainer

NUM_CLASSES = 20


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, size: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(size, 3, 32, 32, generator=generator)
        self.labels = torch.randint(NUM_CLASSES, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


def checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def main(out: str) -> None:
    torch.manual_seed(0)
    student = timm.create_model("test_convnext", num_classes=NUM_CLASSES)
    teacher = timm.create_model("test_resnet", num_classes=NUM_CLASSES)
    initial = checksum(student)
    args = DistillationArguments(
        output_dir=f"{out}/run",
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        optim="sgd",
        sampler="dis",
        num_sampled=5,
        dis_refit_every=2,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        use_cpu=True,
    )
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages())
    trainer.train()
    result = {
        "world_size": args.world_size,
        "global_step": trainer.state.global_step,
        "sampler": trainer.sampler.state_dict(),
        "initial_checksum": initial,
        "parameter_checksum": checksum(student),
    }
    with open(f"{out}/rank{args.process_index}.json", "w") as handle:
        json.dump(result, handle)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # without it, about half the runs abort at exit


if __name__ == "__main__":
    main(sys.argv[1])
