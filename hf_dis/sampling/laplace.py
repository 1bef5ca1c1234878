"""A mixture of Laplace distributions over teacher ranks, and its weighted-EM fit to binned data.

Ranks are the integers 0..C-1. Component m puts on rank r the mass of a continuous Laplace(mu_m, b_m) on the cell
[r - 1/2, r + 1/2), renormalised over all valid cells [-1/2, C - 1/2). Normalising each component separately makes
w_m exactly the component's share of the proposal mass (the spec's "mixture renormalised over the ranks" is the
same family of distributions with the weights re-parametrised), so the prior constraint w_0 >= w_min reads
"at least w_min of the draws come from the prior". Component 0 is the prior: its location is fixed at rank 0.

Data are rank bins [lo, hi) with a non-negative mass each (log-spaced bins for large C). The EM's E-step is exact for
binned data (cell masses over each bin); the M-step follows the spec: weights from responsibilities, locations by
weighted median and scales by weighted mean absolute deviation, both over bin centres (an approximation for wide
bins), scales floored at `MIN_SCALE` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        edges = edges.to(torch.float64) - 0.5
        lo, hi = edges[:-1].unsqueeze(0), edges[1:].unsqueeze(0)
        locs, scales = self.locs.unsqueeze(1), self.scales.unsqueeze(1)
        masses = _interval_mass(lo, hi, locs, scales)
        total = _interval_mass(
            torch.tensor(-0.5, dtype=torch.float64), torch.tensor(num_ranks - 0.5, dtype=torch.float64), locs, scales
        )
        return masses / total.clamp_min(torch.finfo(torch.float64).tiny)

    def bin_probs(self, edges: torch.Tensor, num_ranks: int) -> torch.Tensor:
        """`[n]`: the mixture's probability of each rank bin."""
        return self.weights @ self.component_bin_masses(edges, num_ranks)


def _interval_mass(lo: torch.Tensor, hi: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Laplace(loc, scale) mass of [lo, hi), written with the tail on each side so that far cells keep precision."""
    left = 0.5 * (torch.exp((hi.clamp(max=loc) - loc) / scale) - torch.exp((lo.clamp(max=loc) - loc) / scale))
    right = 0.5 * (torch.exp(-(lo.clamp(min=loc) - loc) / scale) - torch.exp(-(hi.clamp(min=loc) - loc) / scale))
    return left + right


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted median of sorted `values [n]` for each row of `weights [M, n]`."""
    cumulative = weights.cumsum(-1)
    half = 0.5 * cumulative[:, -1:]
    index = torch.searchsorted(cumulative, half).clamp(max=values.numel() - 1)
    return values[index.squeeze(-1)]


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
    masses = masses.to(torch.float64)
    total = float(masses.sum())
    if not total > 0:
        raise ValueError("the rank statistic has no mass: nothing to fit.")
    masses = masses / total
    edges64 = edges.to(torch.float64)
    centres = (edges64[:-1] + edges64[1:] - 1) / 2
    weights, locs, scales = init.weights.clone(), init.locs.clone(), init.scales.clone()
    for _ in range(iterations):
        mixture = LaplaceMixture(weights, locs, scales)
        joint = weights.unsqueeze(1) * mixture.component_bin_masses(edges, num_ranks)
        responsibilities = joint / joint.sum(0, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        data_weights = responsibilities * masses  # [M, n]
        component_mass = data_weights.sum(-1)
        weights = _constrain_prior(component_mass / component_mass.sum(), prior_min_weight)
        live = component_mass > 0
        medians = _weighted_median(centres, data_weights)
        locs = torch.where(live, medians, locs)
        locs[0] = 0.0
        deviations = (data_weights * (centres.unsqueeze(0) - locs.unsqueeze(1)).abs()).sum(-1)
        scales = torch.where(live, deviations / component_mass.clamp_min(1e-300), scales).clamp_min(MIN_SCALE)
    return LaplaceMixture(weights, locs, scales)


def _constrain_prior(weights: torch.Tensor, prior_min_weight: float) -> torch.Tensor:
    """Raise w_0 to `prior_min_weight` when below, scaling the other weights down to keep the sum at 1."""
    if weights.numel() == 1 or float(weights[0]) >= prior_min_weight:
        return weights
    others = weights[1:]
    others_total = float(others.sum())
    scaled = (
        others * ((1 - prior_min_weight) / others_total)
        if others_total > 0
        else torch.full_like(others, (1 - prior_min_weight) / others.numel())
    )
    return torch.cat([weights.new_tensor([prior_min_weight]), scaled])
