"""Row-sparse classifier updates inside the Trainer (`classifier_optimizer="row_sparse"`).

The Trainer builds its optimizer as usual; the student's classifier weight and bias are then taken out of it and
given to a `RowSparseSGD` / `RowSparseAdamW` with the same hyper-parameters (weight decay on the weight, none on the
bias, as the Trainer groups them). An optimizer passed to the Trainer (`optimizers=`, as the recipes do) gives up the
classifier the same way when it is a `torch.optim.SGD` (`row_sparse_counterpart`: its hyper-parameters, group by
group); other passed optimizers are refused, since no row-sparse update equals them. That optimizer steps right
after the Trainer's (a step post-hook), at the Trainer's current learning rate, on the rows the step's forwards used.
Its state is saved as `classifier_optimizer.pt` in every checkpoint and restored on resume.

The classifier weight's gradient is sparse on sampled steps (`SampledLinear.sparse_grad`): only the used rows are
ever written, in the backward, the gradient clipping and the update, never a `[C, d]` buffer. DDP does not reduce it
(the weight is on DDP's ignore list, which also skips it in DDP's first broadcast: `broadcast_from_main_process`
does that instead); `reduce_row_gradient` averages it over processes after the last backward of each optimizer step,
on the union of the rows the processes used, before the Trainer clips gradients, so that clipping and the logged
gradient norm see the same averaged gradient as with a dense classifier. Full forwards (DIS probe steps, full KD)
give a dense gradient, reduced densely.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainingArguments

from hf_dis.heads import RowSparseAdamW, RowSparseSGD, SampledLinear
from hf_dis.heads.row_sparse import coalesced
from hf_dis.trainer.internals import checkpoint_folder

CLASSIFIER_OPTIMIZER_NAME = "classifier_optimizer.pt"


def build_row_sparse_optimizer(head: SampledLinear, args: TrainingArguments) -> torch.optim.Optimizer:
    """The row-sparse counterpart of the optimizer `args.optim` names, for `head`'s weight and bias."""
    groups = [{"params": [head.weight], "weight_decay": args.weight_decay}]
    if head.bias is not None:
        groups.append({"params": [head.bias], "weight_decay": 0.0})
    options = _optim_args(args.optim_args)
    if args.optim == "sgd":
        return RowSparseSGD(groups, lr=args.learning_rate, momentum=float(options.get("momentum", 0.0)),
                            nesterov=options.get("nesterov", "false").lower() in ("true", "1", "yes"))  # fmt: skip
    return RowSparseAdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        row_wise_second_moment=row_wise_second_moment(args.optim_args),
    )  # fmt: skip


def row_sparse_counterpart(optimizer: torch.optim.Optimizer, head: SampledLinear) -> RowSparseSGD:
    """A `RowSparseSGD` for `head`'s weight and bias with the hyper-parameters of the `torch.optim.SGD` group that
    holds each of them in `optimizer` (passed to the Trainer; call before taking them out of it)."""
    if type(optimizer) is not torch.optim.SGD:
        raise ValueError(
            f"classifier_optimizer='row_sparse' with a passed optimizer needs torch.optim.SGD (it takes the "
            f"classifier out and updates it with RowSparseSGD, the same hyper-parameters), got "
            f"{type(optimizer).__name__}. Let the Trainer build the optimizer, or keep classifier_optimizer='dense'."
        )
    if any(parameter in optimizer.state for parameter in (head.weight, head.bias) if parameter is not None):
        raise ValueError("the passed optimizer has already stepped the classifier: pass a fresh one.")
    groups = []
    for parameter in (head.weight, head.bias):
        group = next((g for g in optimizer.param_groups if any(p is parameter for p in g["params"])), None)
        if parameter is None or group is None:
            continue
        if group.get("dampening", 0) or group.get("maximize", False):
            raise ValueError("classifier_optimizer='row_sparse' supports SGD without dampening or maximize.")
        options = {key: group[key] for key in ("momentum", "weight_decay", "nesterov")}
        groups.append({"params": [parameter], **options})
    if not groups:
        raise ValueError("the passed optimizer does not optimise the student's classifier.")
    lr = next(g["lr"] for g in optimizer.param_groups)
    return RowSparseSGD(groups, lr=lr)


def row_wise_second_moment(optim_args: str | None) -> bool:
    """`second_moment=row` in `optim_args` (AdamW's row-sparse variant keeps one second moment per row: see
    `RowSparseAdamW`); `element`, the default, is AdamW's own. The Trainer's dense AdamW ignores the key."""
    value = _optim_args(optim_args).get("second_moment", "element")
    if value not in ("element", "row"):
        raise ValueError(f"optim_args second_moment must be 'element' or 'row', got {value!r}.")
    return value == "row"


def remove_parameters(optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor]) -> None:
    """Take `parameters` out of a freshly built optimizer's groups (before its first step: it has no state yet)."""
    excluded = {id(parameter) for parameter in parameters}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in excluded]


def reduce_row_gradient(weight: torch.Tensor, accelerator) -> None:
    """Make `weight.grad` the average over processes of every process's gradient, sparse (coalesced) when each
    process's is sparse: a post-accumulate-grad hook of the classifier weight, acting on the step's last micro-batch
    (when the Trainer synchronises gradients), as DDP does for the other parameters."""
    if not accelerator.sync_gradients:
        return
    grad = coalesced(weight.grad) if weight.grad.is_sparse else weight.grad
    if accelerator.num_processes > 1:
        num_rows = weight.shape[0]
        used = torch.zeros(num_rows + 1, device=grad.device)  # rows this process used, then a "dense" flag
        if grad.is_sparse:
            used[grad.indices()[0]] = 1.0
        else:
            used[num_rows] = 1.0
        used = accelerator.reduce(used, reduction="sum")
        if used[num_rows] > 0:  # some process has a dense gradient: reduce densely
            grad = accelerator.reduce(grad.to_dense() if grad.is_sparse else grad, reduction="mean")
        else:
            rows = used[:num_rows].nonzero().flatten()
            values = grad.values().new_zeros((rows.numel(), *weight.shape[1:]))
            values.index_add_(0, torch.searchsorted(rows, grad.indices()[0]), grad.values())
            values = accelerator.reduce(values, reduction="mean")
            grad = torch.sparse_coo_tensor(
                rows.unsqueeze(0), values, weight.shape, is_coalesced=True, check_invariants=False
            )
    weight.grad = grad


def broadcast_from_main_process(tensor: torch.Tensor) -> None:
    """Copy the main process's `tensor` to every process (DDP's first broadcast skips the parameters it ignores)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        with torch.no_grad():
            dist.broadcast(tensor, src=0)


class ClassifierOptimizerCallback(TrainerCallback):
    """Saves the row-sparse optimizer's state into each checkpoint folder: the main process's as
    `classifier_optimizer.pt`, or with `file_name` every process's own (a sharded classifier's: each holds other
    rows)."""

    def __init__(self, optimizer: torch.optim.Optimizer, file_name: str | None = None) -> None:
        self.optimizer = optimizer
        self.file_name = file_name

    def on_save(self, args, state, control, **kwargs):
        if self.file_name is not None or state.is_world_process_zero:
            folder = checkpoint_folder(args.output_dir, state.global_step)
            torch.save(self.optimizer.state_dict(), folder / (self.file_name or CLASSIFIER_OPTIMIZER_NAME))


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
