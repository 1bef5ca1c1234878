"""The optimisation of the two benchmark recipes, as argument defaults plus an optimizer and schedule builder.

- `CIFARRecipe`: the CIFAR-100 KD literature's (CRD, Tian et al. 2020, and the works that reuse its code): 240
  epochs, batch 64, SGD lr 0.05 with momentum 0.9 and weight decay 5e-4, x 0.1 at epochs 150, 180 and 210.
- `BoTRecipe`: BoT re-ID's (Luo et al. 2019): 120 epochs, batch 64 = P 16 x K 4, Adam lr 3.5e-4 with weight decay
  5e-4, linear warm-up from 3.5e-5 over 10 epochs, x 0.1 at epochs 40 and 70, label smoothing 0.1.

Each is a dataclass mixin that changes `TrainingArguments` defaults (so `--help` shows the recipe's values and every
one can still be overridden) and adds the schedule's options. `recipe_optimizers` builds the optimizer and a
`LambdaLR` over optimizer steps, handed to the Trainer (`optimizers=`), which steps, saves and restores them.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import TrainingArguments

from hf_dis.trainer.arguments import unpin_memory_without_accelerator


def _default(name: str, value: Any) -> Any:
    """A TrainingArguments field with another default, keeping its help."""
    metadata = TrainingArguments.__dataclass_fields__[name].metadata
    if isinstance(value, list):
        return field(default_factory=lambda: list(value), metadata=metadata)
    return field(default=value, metadata=metadata)


@dataclass
class ScheduleOptions:
    """Options of the warm-up + multi-step schedule and of the optimizer the recipes build (they replace
    `optim`, `lr_scheduler_type` and `warmup_steps`).

    Args:
        recipe_optimizer: sgd (with momentum) or adam; weight decay applies to every trained parameter, as in the
            recipes' papers.
        momentum: SGD momentum.
        lr_milestones: Epochs at which the learning rate is multiplied by lr_gamma.
        lr_gamma: Learning-rate factor at each milestone.
        warmup_epochs: Epochs of linear warm-up from warmup_start_factor x the learning rate.
        warmup_start_factor: Learning-rate factor at the start of the warm-up.
    """

    recipe_optimizer: str = field(
        default="sgd",
        metadata={
            "help": "sgd (with momentum) or adam; weight decay applies to every trained parameter, as in the "
            "recipes' papers."
        },
    )
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    lr_milestones: list[float] = field(
        default_factory=lambda: [150.0, 180.0, 210.0],
        metadata={"help": "Epochs at which the learning rate is multiplied by lr_gamma."},
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "Learning-rate factor at each milestone."})
    warmup_epochs: float = field(
        default=0.0, metadata={"help": "Epochs of linear warm-up from warmup_start_factor x the learning rate."}
    )
    warmup_start_factor: float = field(
        default=0.1, metadata={"help": "Learning-rate factor at the start of the warm-up."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        unpin_memory_without_accelerator(self)
        if self.recipe_optimizer not in ("sgd", "adam"):
            raise ValueError(f"recipe_optimizer must be 'sgd' or 'adam', got {self.recipe_optimizer!r}.")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {self.lr_milestones}.")
        # The recipe builds its own optimizer and schedule: say so rather than ignore the Trainer's options for them.
        replaced = {"optim": "recipe_optimizer", "lr_scheduler_type": "lr_milestones", "warmup_steps": "warmup_epochs"}
        for name, instead in replaced.items():
            default = TrainingArguments.__dataclass_fields__[name].default
            if getattr(self, name) != default:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not used by the recipe, which builds its own optimizer and "
                    f"schedule: set {instead} instead."
                )
        if not 0 < self.warmup_start_factor <= 1 or self.warmup_epochs < 0:
            raise ValueError(
                f"warmup_start_factor must be in (0, 1] and warmup_epochs >= 0, got {self.warmup_start_factor} and "
                f"{self.warmup_epochs}."
            )


@dataclass
class CIFARRecipe(ScheduleOptions):
    """The CIFAR-100 KD recipe's defaults (see the module docstring)."""

    num_train_epochs: float = _default("num_train_epochs", 240.0)
    per_device_train_batch_size: int = _default("per_device_train_batch_size", 64)
    learning_rate: float = _default("learning_rate", 0.05)
    weight_decay: float = _default("weight_decay", 5e-4)
    #: Evaluation batches of the Trainer's default 8 make a 100,000-image test split take 12,500 steps.
    per_device_eval_batch_size: int = _default("per_device_eval_batch_size", 256)


@dataclass
class BoTRecipe(ScheduleOptions):
    """The BoT re-ID recipe's defaults (see the module docstring)."""

    recipe_optimizer: str = field(
        default="adam", metadata=ScheduleOptions.__dataclass_fields__["recipe_optimizer"].metadata
    )
    lr_milestones: list[float] = field(
        default_factory=lambda: [40.0, 70.0], metadata=ScheduleOptions.__dataclass_fields__["lr_milestones"].metadata
    )
    warmup_epochs: float = field(default=10.0, metadata=ScheduleOptions.__dataclass_fields__["warmup_epochs"].metadata)
    num_train_epochs: float = _default("num_train_epochs", 120.0)
    per_device_train_batch_size: int = _default("per_device_train_batch_size", 64)
    learning_rate: float = _default("learning_rate", 3.5e-4)
    weight_decay: float = _default("weight_decay", 5e-4)
    label_smoothing_factor: float = _default("label_smoothing_factor", 0.1)


def steps_per_epoch(num_examples: int, args: TrainingArguments, partial_last_batch: bool = True) -> int:
    """Optimizer steps in one epoch, as the Trainer counts them: a smaller last batch counts unless
    `partial_last_batch` is False (P x K batches: `IdentitySampler` yields whole steps only); accumulation included."""
    per_step = args.per_device_train_batch_size * args.world_size
    batches = math.ceil(num_examples / per_step) if partial_last_batch else max(num_examples // per_step, 1)
    return max(math.ceil(batches / args.gradient_accumulation_steps), 1)


def recipe_optimizers(
    model: nn.Module, args: ScheduleOptions, num_train_examples: int, partial_last_batch: bool = True
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer of `args.recipe_optimizer` over the model's trained parameters, and the warm-up + multi-step
    schedule over optimizer steps (epochs as `steps_per_epoch` counts them), for the Trainer's `optimizers=`."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if args.recipe_optimizer == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    return optimizer, warmup_multistep_schedule(
        optimizer,
        steps_per_epoch(num_train_examples, args, partial_last_batch),
        args.lr_milestones,
        args.lr_gamma,
        args.warmup_epochs,
        args.warmup_start_factor,
    )


def warmup_multistep_schedule(
    optimizer: torch.optim.Optimizer,
    steps_in_epoch: int,
    milestones: list[float],
    gamma: float,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr x factor(step): from `warmup_start_factor` to 1 linearly over `warmup_epochs`, then `gamma` to the power
    of the number of milestones (in epochs) passed."""
    milestone_steps = [round(epoch * steps_in_epoch) for epoch in milestones]
    warmup_steps = round(warmup_epochs * steps_in_epoch)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start_factor + (1 - warmup_start_factor) * step / warmup_steps
        return gamma ** bisect.bisect_right(milestone_steps, step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
