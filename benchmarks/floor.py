"""The floor of a sampled run: the same student with its head cut to the sampled set's size, the time no sampler can
beat. Shared by `reproduce.py` (a study's floor runs) and `bench_trainer.py` (`--floor`)."""

from __future__ import annotations

#: Columns a sampled set holds besides its K draws: the label and the teacher's top class (the samplers' defaults).
FORCED_COLUMNS = 2


def floor_num_classes(size: float, num_classes: int) -> int:
    """K' of a sampled size: K (an integer >= 1, or a fraction of `num_classes`, rounded, at least 1) plus the
    forced columns."""
    draws = int(size) if size >= 1 else max(1, round(size * num_classes))
    return draws + FORCED_COLUMNS
