"""A mixture of Laplace distributions over teacher ranks, and its weighted-EM fit to binned data.

Ranks are the integers 0..C-1. Component m puts on rank r the mass of a continuous Laplace(mu_m, b_m) on the cell
[r - 1/2, r + 1/2), renormalised over all valid cells [-1/2, C - 1/2). Normalising each component separately makes
w_m exactly the component's share of the proposal mass (docs/method.md's "mixture renormalised over the ranks" is the
same family of distributions with the weights re-parametrised), so the prior constraint w_0 >= w_min reads
"at least w_min of the draws come from the prior". Component 0 is the prior: its location is fixed at rank 0.

Data are rank bins [lo, hi) with a non-negative mass each (log-spaced bins for large C). The EM's E-step is exact for
binned data (cell masses over each bin); the M-step follows docs/method.md: weights from responsibilities, locations by
weighted median and scales by weighted mean absolute deviation, both over bin centres (an approximation for wide
bins), scales floored at `MIN_SCALE` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MIN_SCALE = 0.5


@dataclass
class LaplaceMixture:
    """Weights, locations and scales of M components, as float64 tensors `[M]`; component 0 is the prior."""

    weights: torch.Tensor
    locs: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def from_lists(cls, weights, locs, scales) -> LaplaceMixture:
        def as64(values) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64).clone()

        mixture = cls(as64(weights), as64(locs), as64(scales))
        mixture.validate()
        return mixture

    def to_lists(self) -> dict[str, list[float]]:
        return {"weights": self.weights.tolist(), "locs": self.locs.tolist(), "scales": self.scales.tolist()}

    def validate(self) -> None:
        sizes = {self.weights.numel(), self.locs.numel(), self.scales.numel()}
        if len(sizes) != 1 or self.weights.numel() < 1:
            raise ValueError(f"weights, locs and scales must have the same length >= 1, got sizes {sorted(sizes)}.")
        if bool((self.weights < 0).any()) or abs(float(self.weights.sum()) - 1) > 1e-6:
            raise ValueError(f"mixture weights must be >= 0 and sum to 1, got {self.weights.tolist()}.")
        if bool((self.scales <= 0).any()):
            raise ValueError(f"mixture scales must be > 0, got {self.scales.tolist()}.")
        if float(self.locs[0]) != 0.0:
            raise ValueError(f"the prior component's location must be rank 0, got {float(self.locs[0])}.")

    def component_bin_masses(self, edges: torch.Tensor, num_ranks: int) -> torch.Tensor:
        """`[M, n]`: each component's probability of the rank bins [edges[i], edges[i+1]), normalised over ranks."""
        return torch.from_numpy(
            _component_bin_masses(_float64(edges), num_ranks, _float64(self.locs), _float64(self.scales))
        )

    def bin_probs(self, edges: torch.Tensor, num_ranks: int) -> torch.Tensor:
        """`[n]`: the mixture's probability of each rank bin."""
        return torch.from_numpy(_float64(self.weights) @ self.component_bin_masses(edges, num_ranks).numpy())


# The arithmetic is numpy's: a refit is some 3,000 operations on arrays of a few hundred numbers, and every torch
# operation lets go of the GIL and takes it back, which in a training process whose other threads want the GIL too
# (the loader's pin-memory thread) made refits many times slower in the GPU studies (benchmarks/bench_refit.py,
# docs/studies/glyphs_gb2312_gpu.md); numpy keeps the GIL for arrays this small.


def _float64(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy().astype(np.float64)


def _component_bin_masses(edges: np.ndarray, num_ranks: int, locs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """`[M, n]` as `LaplaceMixture.component_bin_masses`, from float64 edges `[n + 1]`, locations and scales `[M]`."""
    edges = edges - 0.5
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    locs, scales = locs[:, None], scales[:, None]
    masses = _interval_mass(lo, hi, locs, scales)
    total = _interval_mass(np.float64(-0.5), np.float64(num_ranks - 0.5), locs, scales)
    return masses / np.maximum(total, np.finfo(np.float64).tiny)


def _interval_mass(lo: np.ndarray, hi: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Laplace(loc, scale) mass of [lo, hi), written with the tail on each side so that far cells keep precision."""
    left = 0.5 * (np.exp((np.minimum(hi, loc) - loc) / scale) - np.exp((np.minimum(lo, loc) - loc) / scale))
    right = 0.5 * (np.exp(-(np.maximum(lo, loc) - loc) / scale) - np.exp(-(np.maximum(hi, loc) - loc) / scale))
    return left + right


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted median of sorted `values [n]` for each row of `weights [M, n]`."""
    cumulative = weights.cumsum(-1)
    index = [np.searchsorted(row, 0.5 * row[-1]) for row in cumulative]
    return values[np.minimum(index, values.size - 1)]


def fit_laplace_mixture(
    edges: torch.Tensor,
    masses: torch.Tensor,
    num_ranks: int,
    init: LaplaceMixture,
    *,
    prior_min_weight: float,
    iterations: int = 30,
) -> LaplaceMixture:
    """Weighted EM of a Laplace mixture to binned rank data, warm-started from `init`.

    Args:
        edges: `[n + 1]` increasing rank-bin edges from 0 to `num_ranks`.
        masses: `[n]` non-negative data mass per bin (normalised here).
        num_ranks: C.
        init: the starting mixture (the last fit, when refitting).
        prior_min_weight: lower bound on the prior component's weight w_0.
        iterations: EM iterations.
    """
    masses = _float64(masses)
    total = float(masses.sum())
    if not total > 0:
        raise ValueError("the rank statistic has no mass: nothing to fit.")
    masses = masses / total
    edges64 = _float64(edges)
    centres = (edges64[:-1] + edges64[1:] - 1) / 2
    weights, locs, scales = _float64(init.weights), _float64(init.locs), _float64(init.scales)
    tiny = np.finfo(np.float64).tiny
    for _ in range(iterations):
        joint = weights[:, None] * _component_bin_masses(edges64, num_ranks, locs, scales)
        responsibilities = joint / np.maximum(joint.sum(0, keepdims=True), tiny)
        data_weights = responsibilities * masses  # [M, n]
        component_mass = data_weights.sum(-1)
        weights = _constrain_prior(component_mass / component_mass.sum(), prior_min_weight)
        live = component_mass > 0
        locs = np.where(live, _weighted_median(centres, data_weights), locs)
        locs[0] = 0.0
        deviations = (data_weights * np.abs(centres[None, :] - locs[:, None])).sum(-1)
        scales = np.maximum(np.where(live, deviations / np.maximum(component_mass, 1e-300), scales), MIN_SCALE)
    return LaplaceMixture(torch.from_numpy(weights), torch.from_numpy(locs), torch.from_numpy(scales))


def _constrain_prior(weights: np.ndarray, prior_min_weight: float) -> np.ndarray:
    """Raise w_0 to `prior_min_weight` when below, scaling the other weights down to keep the sum at 1."""
    if weights.size == 1 or weights[0] >= prior_min_weight:
        return weights
    others = weights[1:]
    others_total = others.sum()
    scaled = (
        others * ((1 - prior_min_weight) / others_total)
        if others_total > 0
        else np.full_like(others, (1 - prior_min_weight) / others.size)
    )
    return np.concatenate([[prior_min_weight], scaled])
