"""Run by tests/test_trainer.py: `python sharded_distil.py <out> <per-device batch size>` trains the reference in one
process with the whole classifier; under `accelerate launch --multi_gpu --num_processes 2` (2 gloo ranks on CPU) the
same runs with `classifier_parallel=True`, each rank holding half the classifier's rows.

Runs (each writes <out>/<run>-rank<i>.json: sampler state, checksums of the backbone, logged losses and an evaluation
on other images; and saves the student to <out>/<run>/final with `save_model`):
- dis: DIS (K = 5, refit every 2 steps), row-sparse SGD with momentum and weight decay, gradient clipping, 4 steps,
  a checkpoint every 2;
- dis-resumed: the same run stopped after step 2, then resumed from its checkpoint to step 4;
- full: full KD, 3 steps of 2 accumulated micro-batches.
"""

import json
import os
import sys
from pathlib import Path

import timm
import torch

from hf_dis import DistillationArguments, DistillationTrainer
from hf_dis.metrics import classification_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared tiny data
from tiny_models import NUM_CLASSES, RandomImages, StopAt  # noqa: E402


def backbone_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for n, p in model.named_parameters() if ".head.fc." not in n))


def run(out: str, name: str, sampler: str, batch_size: int, max_steps: int, stop_at: int | None = None,
        resume: bool = False, accumulation: int = 1) -> DistillationTrainer:  # fmt: skip
    torch.manual_seed(0)
    student = timm.create_model("test_convnext", num_classes=NUM_CLASSES)
    teacher = timm.create_model("test_resnet", num_classes=NUM_CLASSES)
    probe = sampler == "dis"
    args = DistillationArguments(
        output_dir=f"{out}/{name}",
        max_steps=max_steps,
        per_device_train_batch_size=batch_size // accumulation,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=0.1,
        optim="sgd",
        optim_args="momentum=0.9",
        weight_decay=0.01,
        max_grad_norm=0.5,
        sampler=sampler,
        num_sampled=5 if probe else None,
        dis_refit_every=2 if probe else None,
        classifier_optimizer="row_sparse",
        classifier_parallel=int(os.environ.get("WORLD_SIZE", "1")) > 1,  # set by accelerate launch
        save_strategy="steps" if probe else "no",
        save_steps=2,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        use_cpu=True,
    )
    callbacks = [StopAt(stop_at)] if stop_at is not None else []
    # Sharded, the predictions are each example's top 5 class ids: classification_metrics reads them as logits.
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=RandomImages(32),
                                  callbacks=callbacks, compute_metrics=classification_metrics)  # fmt: skip
    trainer.train(resume_from_checkpoint=resume or None)
    if stop_at is None:
        trainer.save_model(f"{out}/{name}/final")
    result = {
        "world_size": args.world_size,
        "global_step": trainer.state.global_step,
        "sampler": trainer.sampler.state_dict(),
        "backbone_checksum": backbone_checksum(trainer.model),
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "grad_norms": [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry],
        "eval": trainer.evaluate(RandomImages(16, seed=1)),
    }
    with open(f"{out}/{name}-rank{args.process_index}.json", "w") as handle:
        json.dump(result, handle)
    return trainer


if __name__ == "__main__":
    out, batch_size = sys.argv[1], int(sys.argv[2])
    run(out, "dis", "dis", batch_size, max_steps=4)
    run(out, "dis-resumed", "dis", batch_size, max_steps=4, stop_at=2)
    run(out, "dis-resumed", "dis", batch_size, max_steps=4, resume=True)
    run(out, "full", "full", batch_size, max_steps=3, accumulation=2)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # neither rank tears the group down while the other still uses it
        torch.distributed.destroy_process_group()
