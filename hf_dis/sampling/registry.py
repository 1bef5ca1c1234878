"""The sampler registry: names to classes, and `build_sampler`."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hf_dis.sampling.base import ClassSampler

_SAMPLERS: dict[str, type[ClassSampler]] = {}


def register_sampler(cls: type[ClassSampler]) -> type[ClassSampler]:
    """Class decorator: make `cls` buildable by its `name`."""
    if cls.name in _SAMPLERS:
        warnings.warn(
            f"Overwriting sampler {cls.name!r} ({_SAMPLERS[cls.name].__name__}) with {cls.__name__}.", stacklevel=2
        )
    _SAMPLERS[cls.name] = cls
    return cls


def list_samplers() -> list[str]:
    return sorted(_SAMPLERS)


def parse_num_sampled(num_sampled: int | float) -> int | float:
    """The one meaning of `num_sampled`, wherever it is given: an integer K >= 1 (integral floats, as from a command
    line, become int: 1.0 is K = 1), or a fraction of the classes in (0, 1)."""
    if isinstance(num_sampled, bool) or not isinstance(num_sampled, (int, float)) or not num_sampled > 0:
        raise ValueError(f"num_sampled must be an integer >= 1 or a fraction in (0, 1), got {num_sampled!r}.")
    if num_sampled < 1:
        return float(num_sampled)
    if float(num_sampled).is_integer():
        return int(num_sampled)
    raise ValueError(f"num_sampled must be an integer >= 1 or a fraction in (0, 1), got {num_sampled!r}.")


def resolve_num_sampled(num_sampled: int | float, num_classes: int) -> int:
    """K for C classes (`parse_num_sampled`; a fraction is rounded, at least 1)."""
    num_sampled = parse_num_sampled(num_sampled)
    return max(1, round(num_sampled * num_classes)) if isinstance(num_sampled, float) else num_sampled


def build_sampler(name: str, num_classes: int, num_sampled: int | float | None, **options) -> ClassSampler:
    """Build a sampler by name (one of `list_samplers()`: full, uniform, topk, ftis, dis).

    Args:
        name: the sampler's name.
        num_classes: C.
        num_sampled: K draws per step, or a fraction of C; None only for ``full``.
        **options: the sampler's keyword options (scope, force_label, force_teacher_topk, eps, seed, and its own).
    """
    if name not in _SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {list_samplers()}.")
    if num_sampled is not None:
        num_sampled = resolve_num_sampled(num_sampled, num_classes)
    return _SAMPLERS[name](num_classes, num_sampled, **options)
