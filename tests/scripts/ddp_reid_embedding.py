"""Run by tests/test_reid.py under `accelerate launch --multi_gpu --num_processes 2` (2 gloo ranks on CPU):
`python ddp_reid_embedding.py <out>`. A re-ID student distilled with the similarity-preserving term on the
embeddings (and the sampled logit term) for 3 steps; each rank writes to <out>/rank<i>.json its world size, the
logged embedding term and a checksum of its parameters, which DDP must keep identical on both ranks.
"""

import json
import sys
from pathlib import Path

import torch

import hf_dis
from hf_dis.data import padded_crop_transform
from hf_dis.models import ReIDModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared tiny data
from tiny_models import identity_split  # noqa: E402


def main(out: str) -> None:
    transform = padded_crop_transform(training=False, image_size=(32, 16))
    train = identity_split(8, 6, 0).with_transform(hf_dis.data.labelled_batches(transform))
    args = hf_dis.ReIDDistillationArguments(
        output_dir=out, per_device_train_batch_size=4, instances_per_identity=2, max_steps=3, num_sampled=3,
        dis_refit_every=2, embedding_kd_weight=5.0, logging_steps=1, report_to="none", save_strategy="no",
        disable_tqdm=True, use_cpu=True, seed=0, learning_rate=0.05,
    )  # fmt: skip
    torch.manual_seed(0)
    student = ReIDModel.from_backbone("test_resnet", 8, seed=0)
    teacher = ReIDModel.from_backbone("test_resnet", 8, seed=1).eval()
    trainer = hf_dis.ReIDDistillationTrainer(model=student, args=args, teacher=teacher, train_dataset=train)
    trainer.train()
    logged = [entry["embedding_kd_loss"] for entry in trainer.state.log_history if "embedding_kd_loss" in entry]
    result = {
        "world_size": args.world_size,
        "embedding_kd_loss": logged,
        "parameter_checksum": float(sum(p.detach().double().sum() for p in student.parameters())),
    }
    (Path(out) / f"rank{args.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # neither rank tears the group down while the other still uses it
        torch.distributed.destroy_process_group()
