"""Row-sparse classifier updates inside the Trainer (`classifier_optimizer="row_sparse"`).

The Trainer builds its optimizer as usual; the student's classifier weight and bias are then taken out of it and
given to a `RowSparseSGD` / `RowSparseAdamW` with the same hyper-parameters (weight decay on the weight, none on the
bias, as the Trainer groups them). That optimizer steps right after the Trainer's (a step post-hook), at the Trainer's
current learning rate, on the rows the step's forwards used (`SampledLinear.pop_touched_rows`; their union over
processes). Its state is saved as `classifier_optimizer.pt` in every checkpoint and restored on resume.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from hf_dis.heads import RowSparseAdamW, RowSparseSGD, SampledLinear

CLASSIFIER_OPTIMIZER_NAME = "classifier_optimizer.pt"


def build_row_sparse_optimizer(head: SampledLinear, args: TrainingArguments) -> torch.optim.Optimizer:
    """The row-sparse counterpart of the optimizer `args.optim` names, for `head`'s weight and bias."""
    groups = [{"params": [head.weight], "weight_decay": args.weight_decay}]
    if head.bias is not None:
        groups.append({"params": [head.bias], "weight_decay": 0.0})
    if args.optim == "sgd":
        options = _optim_args(args.optim_args)
        return RowSparseSGD(groups, lr=args.learning_rate, momentum=float(options.get("momentum", 0.0)),
                            nesterov=options.get("nesterov", "false").lower() in ("true", "1", "yes"))  # fmt: skip
    return RowSparseAdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def remove_parameters(optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor]) -> None:
    """Take `parameters` out of a freshly built optimizer's groups (before its first step: it has no state yet)."""
    excluded = {id(parameter) for parameter in parameters}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in excluded]


def union_over_processes(rows: torch.Tensor | None, num_rows: int, accelerator) -> torch.Tensor | None:
    """The rows any process touched (gradients are averaged over processes), None when one of them touched all."""
    if accelerator.num_processes == 1:
        return rows
    mask = torch.zeros(num_rows + 1, device=accelerator.device)
    if rows is None:
        mask[num_rows] = 1.0  # "every row" flag
    else:
        mask[rows.to(accelerator.device)] = 1.0
    mask = accelerator.reduce(mask, reduction="sum")
    return None if mask[num_rows] > 0 else mask[:num_rows].nonzero().flatten()


class ClassifierOptimizerCallback(TrainerCallback):
    """Saves the row-sparse optimizer's state into each checkpoint folder (main process only)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            torch.save(self.optimizer.state_dict(), os.path.join(folder, CLASSIFIER_OPTIMIZER_NAME))


def load_classifier_state(checkpoint: str) -> dict[str, Any]:
    path = os.path.join(checkpoint, CLASSIFIER_OPTIMIZER_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"{checkpoint} holds no {CLASSIFIER_OPTIMIZER_NAME}, so the row-sparse classifier optimizer cannot resume "
            "where it stopped. Resume from a checkpoint written with classifier_optimizer='row_sparse'."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _optim_args(text: str | None) -> dict[str, str]:
    """`optim_args` ("momentum=0.9,nesterov=True") as a dict, as the Trainer parses it."""
    return dict(item.split("=", 1) for item in (text or "").replace(" ", "").split(",") if item)
