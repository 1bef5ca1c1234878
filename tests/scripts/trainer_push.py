"""Run by tests/test_hub.py with HF_ENDPOINT pointing at a stand-in Hub: `python trainer_push.py <out> <repo id>`.

Distils a tiny timm student with `push_to_hub=True` as a user would, then calls `trainer.push_to_hub()`; prints the
commit URL. A failure prints the error's type and message (the test reads them) and exits with 1.
"""

import sys
from pathlib import Path

import timm
import torch

from hf_dis import DistillationArguments, DistillationTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared tiny data
from tiny_models import NUM_CLASSES, RandomImages  # noqa: E402


def main(out: str, repo_id: str) -> None:
    torch.manual_seed(0)
    args = DistillationArguments(
        output_dir=out,
        max_steps=2,
        per_device_train_batch_size=8,
        num_sampled=4,
        push_to_hub=True,
        hub_model_id=repo_id,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=timm.create_model("test_resnet", num_classes=NUM_CLASSES),
        args=args,
        teacher=timm.create_model("test_convnext", num_classes=NUM_CLASSES),
        train_dataset=RandomImages(),
        eval_dataset=RandomImages(8),
    )
    trainer.train()
    trainer.evaluate()
    commit = trainer.push_to_hub(dataset="random-images", license="apache-2.0")
    print(commit.commit_url)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except Exception as error:  # the test checks what the user would read
        print(f"{type(error).__name__}: {error}")
        sys.exit(1)
