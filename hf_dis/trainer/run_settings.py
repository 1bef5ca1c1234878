"""What defines a run, recorded in each checkpoint and compared when the run resumes.

A trainer's `run_settings()` (the student's architecture; for distillation also the teacher or its cache, T, the loss
weights, the sampler and its options) is written into every checkpoint's completion marker. Resuming from a
checkpoint whose recorded settings differ from the resuming trainer's is refused before anything is written, naming
each changed setting with its old value, unless `resume_with_changed_settings=True` (then each change is logged and
written to the model card): one run, one card, one set of settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)


def model_fingerprint(model: nn.Module) -> str:
    """The architecture of `model` in words: its class (and timm architecture), its parameter count and a hash of its
    parameters' names and shapes (another architecture with as many parameters still differs)."""
    shapes = "".join(f"{name}{tuple(parameter.shape)}" for name, parameter in model.named_parameters())
    digest = hashlib.sha256(shapes.encode()).hexdigest()[:8]
    config = getattr(model, "config", None)
    architecture = getattr(config, "architecture", None) or getattr(config, "model_type", None)
    name = type(model).__name__ + (f" ({architecture})" if architecture else "")
    count = sum(parameter.numel() for parameter in model.parameters())
    return f"{name}, {count:,} parameters, shapes {digest}"


def recorded_settings(checkpoint: str | Path, marker_name: str) -> dict[str, Any] | None:
    """The settings recorded in `checkpoint`'s marker; None for a checkpoint without them (a plain Trainer's, or an
    older hf_dis's)."""
    marker = Path(checkpoint) / marker_name
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("run")


def changed_settings(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each setting that differs, as "name: now X (was Y)"."""
    return [
        f"{name}: now {current.get(name)!r} (was {recorded.get(name)!r})"
        for name in sorted({*recorded, *current})
        if recorded.get(name) != current.get(name)
    ]


def check_resumed_settings(
    checkpoint: str, recorded: dict[str, Any] | None, current: dict[str, Any], allow_changes: bool
) -> list[str]:
    """The changes between the settings `checkpoint` recorded and this run's; refused unless `allow_changes`.

    Raises:
        ValueError: a setting changed and `allow_changes` is False.
    """
    current = json.loads(json.dumps(current, default=str))  # as the marker holds it: tuples as lists
    if recorded is None:
        logger.warning("%s records no run settings (an older checkpoint): they cannot be compared.", checkpoint)
        return []
    changes = changed_settings(recorded, current)
    if changes and not allow_changes:
        raise ValueError(
            f"resuming {checkpoint} with other settings than it was trained with: {'; '.join(changes)}. Resume "
            "with the same settings, or set resume_with_changed_settings=True to go on with these (logged, and "
            "written to the model card)."
        )
    for change in changes:
        logger.warning("resuming %s with a changed setting: %s", checkpoint, change)
    return changes
