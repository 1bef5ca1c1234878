"""The sampler's state in checkpoints: written into every `trainer_state.json`, read back on resume.

`SamplerStateCallback` is an `ExportableState` callback, so the Trainer writes the sampler's JSON state into
`trainer_state.json` with every checkpoint (in the same file as the global step, so the two cannot disagree).
`load_sampler_state` reads it back; `DistillationTrainer.train` calls it whenever it resumes, whether or not
`restore_callback_states_from_checkpoint` is set (that flag only rebuilds callbacks, and it would otherwise be easy
to resume a DIS run with a fresh proposal without noticing).
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState

from hf_dis.sampling import ClassSampler

TRAINER_STATE_NAME = "trainer_state.json"


class SamplerStateCallback(TrainerCallback, ExportableState):
    """Reports `sampler.state_dict()` when the Trainer saves a checkpoint.

    When the Trainer rebuilds callbacks from a checkpoint (`restore_callback_states_from_checkpoint=True`) it makes a
    new instance without a sampler; `DistillationTrainer` binds its sampler to it before the first step.
    """

    def __init__(self, sampler: ClassSampler | None = None) -> None:
        self.sampler = sampler

    def state(self) -> dict[str, Any]:
        if self.sampler is None:
            raise RuntimeError("SamplerStateCallback has no sampler bound: it must be created by DistillationTrainer.")
        return {"args": {}, "attributes": {"sampler_state": self.sampler.state_dict()}}


def saved_callback_state(checkpoint: str, callback_name: str) -> dict[str, Any] | None:
    """What the `ExportableState` callback `callback_name` saved in `checkpoint`'s trainer_state.json (None: none)."""
    path = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if not os.path.isfile(path):
        return None
    return TrainerState.load_from_json(path).stateful_callbacks.get(callback_name)


def load_sampler_state(checkpoint: str, sampler: ClassSampler) -> bool:
    """Load the sampler state saved in `checkpoint`'s trainer_state.json into `sampler`; False when there is none.

    Raises:
        ValueError: the checkpoint has no sampler state but the sampler adapts (resuming it fresh would silently
            change the run), or the state belongs to another sampler.
    """
    stored = saved_callback_state(checkpoint, SamplerStateCallback.__name__)
    if stored is None:
        if sampler.refit_every is not None:
            raise ValueError(
                f"{checkpoint} holds no sampler state ({SamplerStateCallback.__name__} in {TRAINER_STATE_NAME}), "
                f"so the {sampler.name!r} sampler cannot resume where it stopped. Resume from a checkpoint written "
                "by DistillationTrainer."
            )
        return False
    sampler.load_state_dict(stored["attributes"]["sampler_state"])
    return True
