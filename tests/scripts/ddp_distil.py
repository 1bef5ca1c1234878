"""Run by tests/test_trainer.py, under `accelerate launch --multi_gpu --num_processes 2` (2 gloo ranks on CPU) or as
a single process for the reference: `python ddp_distil.py <out> <per-device batch size>`.

Two runs: DIS for 4 steps, with the row-sparse classifier optimizer (each rank then writes its sampler state and a
parameter checksum to <out>/dis-rank<i>.json)
and full KD for 3 steps (<out>/full-rank<i>.json), whose result must not depend on how the global batch is split
over processes.
"""

import json
import sys
from pathlib import Path

import timm
import torch

from hf_dis import DistillationArguments, DistillationTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared tiny data
from tiny_models import NUM_CLASSES, RandomImages  # noqa: E402


def checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def run(out: str, sampler: str, batch_size: int, max_steps: int) -> None:
    torch.manual_seed(0)
    student = timm.create_model("test_convnext", num_classes=NUM_CLASSES)
    teacher = timm.create_model("test_resnet", num_classes=NUM_CLASSES)
    initial = checksum(student)
    args = DistillationArguments(
        output_dir=f"{out}/{sampler}",
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=0.1,
        optim="sgd",
        sampler=sampler,
        num_sampled=5 if sampler != "full" else None,
        dis_refit_every=2 if sampler == "dis" else None,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        use_cpu=True,
        # DIS also runs the row-sparse classifier optimizer: its rows must be the union over processes, or the
        # replicas drift apart (the test compares them).
        classifier_optimizer="row_sparse" if sampler == "dis" else "dense",
        optim_args="momentum=0.9" if sampler == "dis" else None,
        weight_decay=0.01 if sampler == "dis" else 0.0,
    )
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages(32))
    trainer.train()
    result = {
        "world_size": args.world_size,
        "global_step": trainer.state.global_step,
        "sampler": trainer.sampler.state_dict(),
        "initial_checksum": initial,
        "parameter_checksum": checksum(student),
    }
    with open(f"{out}/{sampler}-rank{args.process_index}.json", "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    out, batch_size = sys.argv[1], int(sys.argv[2])
    run(out, "dis", batch_size, max_steps=4)
    run(out, "full", batch_size, max_steps=3)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # neither rank tears the group down while the other still uses it
        torch.distributed.destroy_process_group()  # without it, about half the runs abort at exit
