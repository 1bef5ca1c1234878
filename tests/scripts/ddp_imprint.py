"""Run by tests/test_trainer.py under `python -m torch.distributed.run --nproc_per_node 2` (2 gloo ranks on CPU); the
test also calls `main` in its own process. `ImprintHeadCallback.on_train_end` on a tiny timm classifier and 24 random
images of 6 classes (read again as the evaluation set); each rank writes to <out>/rank<i>.json the world size, its
head's rows and bias and the report.
"""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import timm
import torch
import torch.distributed as dist

from hf_dis.trainer import ImprintHeadCallback


class Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(24, 3, 16, 16, generator=generator)
        self.labels = torch.arange(24) % 6

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def main(out: str) -> None:
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=6)
    args = SimpleNamespace(per_device_eval_batch_size=5, dataloader_num_workers=0, disable_tqdm=True, output_dir=out)
    callback = ImprintHeadCallback(Images(), eval_dataset=Images(), seed=3)
    callback.on_train_end(args, SimpleNamespace(is_world_process_zero=rank == 0), None, model=model)
    head = model.get_classifier()
    result = {"world_size": dist.get_world_size() if dist.is_initialized() else 1, "report": callback.report,
              "weight": head.weight.tolist(), "bias": head.bias.tolist()}  # fmt: skip
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
    if dist.is_initialized():
        dist.barrier()  # neither rank tears the group down while the other still uses it
        dist.destroy_process_group()
