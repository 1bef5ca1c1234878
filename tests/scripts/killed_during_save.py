"""A short DIS run into OUTPUT_DIR (6 steps, a checkpoint every 2), for tests/test_guards.py. MODE: `run` (straight
through), `kill-at-4` (the process SIGKILLs itself inside the save of checkpoint-4, after the weights and the
optimizer, before the trainer state), or `resume` (resume_from_checkpoint=True). The final weights are saved."""

import os
import signal
import sys
from pathlib import Path

import torch
from tiny_models import RandomImages, make_args, timm_model
from transformers import Trainer

from hf_dis import DistillationTrainer

output_dir, mode = sys.argv[1], sys.argv[2]
if mode == "kill-at-4":
    save_rng_state = Trainer._save_rng_state

    def killed_at_step_4(self, checkpoint):
        if self.state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        save_rng_state(self, checkpoint)

    Trainer._save_rng_state = killed_at_step_4
torch.use_deterministic_algorithms(True)
args = make_args(
    Path(output_dir), output_dir=output_dir, sampler="dis", num_sampled=5, max_steps=6, save_strategy="steps",
    save_steps=2, overwrite_output_dir=False,
)  # fmt: skip
trainer = DistillationTrainer(
    model=timm_model(), args=args, teacher=timm_model("test_resnet", seed=1), train_dataset=RandomImages(24)
)
trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
trainer.save_model()
