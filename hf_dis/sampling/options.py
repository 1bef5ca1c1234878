"""The samplers' options: one validator each, shared by the samplers and `DistillationArguments`.

Both entry points (`build_sampler` by hand, the arguments through the trainer) call these, so they accept and reject
the same values with the same words; only the option's name differs where the arguments prefix it (`sampler_eps` is
the samplers' `eps`, `dis_refit_every` DIS's `refit_every`). `parse_num_sampled` (in `registry`) does the same for K.
"""

from __future__ import annotations

from hf_dis._checks import check_temperature

#: The sampled set's scopes: each example its own set, or one set for the whole batch.
SCOPES = ("per_example", "batch")

__all__ = ["SCOPES", "check_count", "check_force_teacher_topk", "check_fraction", "check_scope", "check_temperature"]


def check_scope(scope: str, name: str = "scope") -> None:
    if scope not in SCOPES:
        raise ValueError(f"{name} must be one of {list(SCOPES)}, got {scope!r}.")


def check_fraction(value: float, name: str) -> None:
    """A share in [0, 1): the uniform floor `eps`, DIS's `prior_min_weight` and `stat_decay` (1 would leave nothing
    of the proposal, of the other components, of the new statistic)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")


def check_count(value: int, name: str) -> None:
    """A count of at least 1: DIS's `num_components` and `refit_every`."""
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")


def check_force_teacher_topk(force_teacher_topk: int, num_classes: int | None = None) -> None:
    """m >= 0, and at most C once C is known."""
    if force_teacher_topk < 0:
        raise ValueError(f"force_teacher_topk must be >= 0, got {force_teacher_topk}.")
    if num_classes is not None and force_teacher_topk > num_classes:
        raise ValueError(f"force_teacher_topk must be at most the {num_classes} classes, got {force_teacher_topk}.")
