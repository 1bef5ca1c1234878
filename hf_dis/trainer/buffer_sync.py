"""`BufferSyncCallback`: every process evaluates the model that is saved.

Under DDP, gradients are averaged but buffers are not: each process updates its BatchNorm running statistics with its
own batch after DDP broadcast rank 0's at the start of the forward, so after a step the processes hold different
statistics. The Trainer evaluates with the unwrapped model on every process and saves rank 0's, so a distributed
evaluation mixes embeddings (or logits) of slightly different models, and disagrees with an evaluation of the saved
model. This callback broadcasts rank 0's buffers before every evaluation during training and at the end of training.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from transformers import TrainerCallback


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, ...) to every process; nothing without a process group."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


class BufferSyncCallback(TrainerCallback):
    """Broadcast rank 0's buffers when the Trainer is about to evaluate, and when training ends."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_evaluate and model is not None:
            broadcast_buffers(model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if control.should_evaluate and model is not None:
            broadcast_buffers(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            broadcast_buffers(model)
