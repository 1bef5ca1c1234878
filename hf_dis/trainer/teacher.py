"""The teacher: loading it by name or path, freezing it, and converting the student's batch to the input it expects.

A teacher is loaded from a local directory saved with `save_pretrained` (transformers models, timm models inside
`TimmWrapperForImageClassification`), a Hub id (transformers repos, and timm's own `timm/...` repos, which
transformers reads through the same wrapper), or a timm model name (built with its pretrained weights). Input
conversion follows timm's distillation task: when both models declare their normalisation (timm's
`pretrained_cfg`, or an image processor's `image_mean` / `image_std`) and they differ, the batch is de-normalised
with the student's statistics and re-normalised with the teacher's. The batch is resized for the teacher when asked
(`teacher_image_size`) or when the teacher's image processor names a fixed size (`processor_image_size`); a timm
teacher without one keeps the student's resolution, since a CNN may have been trained at any size.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import huggingface_hub
import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hf_dis.data.transforms import Normalization
from hf_dis.models.timm_classifier import timm_module

logger = logging.getLogger(__name__)


def load_teacher(
    name_or_path: str, *, role: str = "teacher", passed_as: str = "teacher_model (or pass an nn.Module as teacher=)"
) -> nn.Module:
    """Build a teacher (or any image classifier: `role` and `passed_as` word the errors) from a local directory, a
    Hub id (``owner/name``) or a timm model name.

    Raises:
        OSError: it cannot be loaded; when the Hub is unreachable, the message says so and how to pass a local path.
    """
    try:
        if os.path.isdir(name_or_path) or "/" in name_or_path:
            return AutoModelForImageClassification.from_pretrained(name_or_path)
        if timm.is_model(name_or_path):
            return timm.create_model(name_or_path, pretrained=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise OSError(_load_failure(name_or_path, error, role, passed_as)) from error
    raise OSError(
        f"cannot load the {role} {name_or_path!r}: it is not a local directory, a Hub id (owner/name) or a timm "
        "model name."
    )


def load_image_processor(name_or_path: str) -> Any:
    """The image processor saved with a transformers model (its folder's or Hub repo's `preprocessor_config.json`),
    so that a teacher named by path or id gets the inputs it was trained on; None when there is none (a timm name
    keeps its `pretrained_cfg`, which the trainer reads from the model)."""
    if not (os.path.isdir(name_or_path) or "/" in name_or_path):
        return None
    if os.path.isdir(name_or_path) and not os.path.isfile(os.path.join(name_or_path, "preprocessor_config.json")):
        return None
    try:
        return AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:  # a Hub id without one, or the Hub unreachable (the model says so first)
        logger.info("no image processor for %s: %s", name_or_path, error)
        return None


def processor_image_size(processor: Any) -> tuple[int, int] | None:
    """The (height, width) an image processor feeds its model: a transformers processor's crop (when it crops) or
    its fixed `size`, a `TimmWrapperImageProcessor`'s `data_config`; None when it only fixes the shorter edge (the
    aspect ratio is the image's) or there is no processor."""
    if processor is None:
        return None
    config = getattr(processor, "data_config", None)
    if isinstance(config, dict) and "input_size" in config:
        return tuple(int(side) for side in config["input_size"][-2:])
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    for size in (crop, getattr(processor, "size", None)):  # a dict, or transformers 5's SizeDict
        height, width = (size.get(side) if hasattr(size, "get") else None for side in ("height", "width"))
        if height and width:
            return int(height), int(width)
    return None


def _load_failure(name_or_path: str, error: Exception, role: str, passed_as: str) -> str:
    message = f"cannot load the {role} {name_or_path!r} ({type(error).__name__}: {error})."
    if os.path.isdir(name_or_path):
        return message + " The directory should hold a model saved with save_pretrained (config.json and weights)."
    missing = f"there is no local directory {os.path.abspath(os.path.expanduser(name_or_path))}"
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:  # a path, not owner/name
        return f"cannot load the {role} {name_or_path!r}: {missing}."
    message = f"cannot load the {role} {name_or_path!r}: {missing}, and as a Hub id ({type(error).__name__}: {error})."
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        reason = "the Hugging Face Hub is unreachable here (HF_HUB_OFFLINE is set)"
    else:
        reason = "if the Hugging Face Hub is unreachable from this machine"
    return (
        f"{message} {reason[0].upper()}{reason[1:]}: download the model where the Hub is reachable, save it with "
        f"save_pretrained, and pass that local directory as {passed_as}."
    )


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the teacher is a constant target (its BN statistics and dropout must not move)."""
    return teacher.eval().requires_grad_(False)


def _timm_pretrained_cfg(model: nn.Module) -> dict | None:
    cfg = getattr(timm_module(model), "pretrained_cfg", None)
    return cfg if isinstance(cfg, dict) else None


def expected_image_size(model: nn.Module) -> tuple[int, int] | None:
    """The input resolution a model declares as fixed (timm's `fixed_input_size`, or a transformers ViT-style
    `config.image_size`), for error messages; None when the model takes any size."""
    cfg = _timm_pretrained_cfg(model)
    if cfg is not None:
        return tuple(cfg["input_size"][-2:]) if cfg.get("fixed_input_size") else None
    size = getattr(getattr(model, "config", None), "image_size", None)
    if isinstance(size, int):
        return (size, size)
    return tuple(size) if isinstance(size, (tuple, list)) else None


class TeacherInputs:
    """Converts the student's `pixel_values` to the teacher's input: re-normalisation, then an optional resize.

    Args:
        student: how the student's batch is normalised (None: unknown).
        teacher: how the teacher expects it (None: unknown).
        image_size: (height, width) to resize to, bilinear with antialiasing; None keeps the student's resolution.
    """

    def __init__(
        self, student: Normalization | None, teacher: Normalization | None, image_size: tuple[int, int] | None = None
    ) -> None:
        self.renormalize = student is not None and teacher is not None and student != teacher
        if (student is None) != (teacher is None):
            known, unknown = ("teacher", "student") if student is None else ("student", "teacher")
            logger.warning(
                "The %s's input normalisation is known but the %s's is not, so the teacher gets the student's batch "
                "unchanged. Pass the image processor (processing_class= / teacher_processing_class=) if they differ.",
                known,
                unknown,
            )
        self.student, self.teacher, self.image_size = student, teacher, image_size

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.renormalize:
            student_mean, student_std = (
                _channel_tensor(v, pixel_values) for v in (self.student.mean, self.student.std)
            )
            teacher_mean, teacher_std = (
                _channel_tensor(v, pixel_values) for v in (self.teacher.mean, self.teacher.std)
            )
            pixel_values = (pixel_values * student_std + student_mean - teacher_mean) / teacher_std
        if self.image_size is not None and tuple(pixel_values.shape[-2:]) != tuple(self.image_size):
            pixel_values = F.interpolate(pixel_values, size=self.image_size, mode="bilinear", antialias=True)
        return pixel_values


def _channel_tensor(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    if len(values) != like.shape[1]:
        raise ValueError(f"normalisation has {len(values)} channels, the batch {like.shape[1]}.")
    return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
