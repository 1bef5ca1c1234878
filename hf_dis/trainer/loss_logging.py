"""`LossPartsLogging`: a Trainer mixin that logs the parts of a loss (and any other per-step scalar) next to the loss:
running means between two logs, averaged over processes, in `log()` and in what `evaluate()` returns.

A trainer calls `self.loss_parts[mode].add(name, value)` (mode ``train`` or ``eval``) from `compute_loss`. The
training sums since the last log travel in each checkpoint's `trainer_state.json` (`LossPartsStateCallback`) and are
restored on resume, so that a resumed run logs what an uninterrupted one does (the main process's sums, under DDP).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from hf_dis.trainer.sampler_state import saved_callback_state


class LossPartsLogging:
    """Mixin for `transformers.Trainer` subclasses (put it before `Trainer` in the bases)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_parts = {"train": RunningMeans(), "eval": RunningMeans()}
        self.add_callback(LossPartsStateCallback(self.loss_parts["train"]))

    def prepare_resume(self, checkpoint: str | None) -> None:
        """The training sums since the last log, from `checkpoint`'s trainer state (none: from zero)."""
        super().prepare_resume(checkpoint)
        saved = None if checkpoint is None else saved_callback_state(checkpoint, LossPartsStateCallback.__name__)
        self.loss_parts["train"].load_state_dict({} if saved is None else saved["attributes"]["running_means"])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the scalars gathered since the last log, averaged over processes."""
        mode = "train" if self.model.training else "eval"
        names, means = self.loss_parts[mode].pop_means(self.args.device)
        if names:
            means = self.accelerator.reduce(means, reduction="mean")  # one collective for all of them
            prefix = "eval_" if mode == "eval" else ""
            # In place, so that evaluate() also returns them (it returns the dict it logs).
            logs.update({prefix + name: round(float(value), 6) for name, value in zip(names, means, strict=True)})
        super().log(logs, start_time)


class LossPartsStateCallback(TrainerCallback, ExportableState):
    """Reports the training `RunningMeans` when the Trainer saves a checkpoint (into `trainer_state.json`)."""

    def __init__(self, means: RunningMeans | None = None) -> None:
        self.means = means

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"running_means": {} if self.means is None else self.means.state_dict()}}


class RunningMeans:
    """Sums and counts of logged scalars between two logs: bounded memory whatever the logging interval, and no
    device sync until the log."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._counts[name] = self._counts.get(name, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {name: value.tolist() for name, value in self._sums.items()}, "counts": dict(self._counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums = {name: torch.tensor(value, dtype=torch.float32) for name, value in state.get("sums", {}).items()}
        self._counts = dict(state.get("counts", {}))

    def set(self, name: str, value: float) -> None:
        """Report `value` itself at the next log (for quantities that are replaced, not averaged)."""
        self._sums[name], self._counts[name] = torch.tensor(float(value)), 1

    def non_finite(self) -> list[str]:
        """The names whose sum since the last log holds a NaN or an infinity (read from the device: for error
        messages, not for every step)."""
        return [name for name in sorted(self._sums) if not bool(torch.isfinite(self._sums[name]).all())]

    def pop_means(self, device: torch.device) -> tuple[list[str], torch.Tensor]:
        names = sorted(self._sums)
        means = [(self._sums[name] / self._counts[name]).to(device) for name in names]
        self._sums.clear()
        self._counts.clear()
        return names, torch.stack(means) if means else torch.empty(0, device=device)
