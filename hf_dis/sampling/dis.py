"""`dis`: dynamic importance sampling (arXiv 1812.00914, as reconstructed in docs/method.md).

Classes are drawn by teacher **rank**: a Laplace mixture over ranks (component 0, the prior, at rank 0) is refitted
from full-distillation probes, where the per-rank interaction g(r) = mean over examples of |p_s,(r) - p_t,(r)| (the
per-rank KD gradient magnitude) is recorded as an exponential moving average on log-spaced rank bins. Early in
training the student disagrees with the teacher everywhere and q spreads out; later it concentrates.

Sampling happens in rank space: only the top R ranks need the teacher's exact order (one top-R selection, no full
sort); ranks >= R form a tail whose total mass is spread uniformly over the remaining classes of each example.
"""

from __future__ import annotations

from typing import Any

import torch

from hf_dis._checks import check_same_classes, check_temperature
from hf_dis.data.cached_logits import CachedTeacherLogits, TeacherLogits, as_dense
from hf_dis.sampling.base import ClassSampler, inclusion_log_prob
from hf_dis.sampling.laplace import LaplaceMixture, fit_laplace_mixture
from hf_dis.sampling.options import check_count, check_fraction
from hf_dis.sampling.registry import register_sampler

RECONSTRUCTED_INITIAL_MIXTURE = {"weights": (0.6, 0.2, 0.2), "locs": (0.0, 10.0, 100.0), "scales": (2.0, 20.0, 500.0)}


def log_rank_bins(num_ranks: int, num_bins: int) -> torch.Tensor:
    """`[n + 1]` bin edges over ranks 0..C-1: at most `num_bins` bins, one per rank when C <= num_bins, else unit
    bins at the top ranks and log-spaced ones further down."""
    if num_ranks <= num_bins:
        return torch.arange(num_ranks + 1)
    grid = torch.logspace(
        0, torch.log10(torch.tensor(num_ranks + 1.0, dtype=torch.float64)), num_bins + 1, dtype=torch.float64
    )
    edges = torch.unique(torch.floor(grid).long() - 1)
    edges[-1] = num_ranks
    return edges


def teacher_ranks(teacher_logits: TeacherLogits, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """`[B, stop - start]` int64: each example's teacher rank of the classes `start..stop-1` (default all C; rank 0:
    the highest logit). Dense logits are ranked by a stable descending sort (equal logits in order of class id); cached
    ones (`CachedTeacherLogits`) by their stored order, then the tail classes (which share one logit) in order of
    class id, which is the rank of their dense logits, and lets a process owning a range of the classes rank its own
    without the others' logits."""
    num_classes = teacher_logits.shape[1]
    stop = num_classes if stop is None else stop
    if not 0 <= start < stop <= num_classes:
        raise ValueError(f"the classes must be a range in [0, {num_classes}), got [{start}, {stop}).")
    if not isinstance(teacher_logits, CachedTeacherLogits):
        order = teacher_logits.detach().argsort(dim=-1, descending=True, stable=True)
        positions = torch.arange(num_classes, device=order.device).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, positions)[:, start:stop]
    top = teacher_logits.top_classes.long()
    num_ranked, width = top.shape[1], stop - start
    ranks = torch.full((top.shape[0], width), -1, dtype=torch.long, device=top.device)
    examples, positions = ((top >= start) & (top < stop)).nonzero(as_tuple=True)
    ranks[examples, top[examples, positions] - start] = positions
    in_tail = ranks < 0
    tail_before = start - (top < start).sum(1, keepdim=True)  # tail classes with an id below `start`
    return torch.where(in_tail, num_ranked + tail_before + in_tail.cumsum(1) - 1, ranks)


@register_sampler
class DISSampler(ClassSampler):
    """Dynamic importance sampling over teacher ranks.

    Args (besides the base sampler's):
        num_components: M, Laplace components including the prior (default 3).
        prior_min_weight: lower bound on the prior component's weight (default 0.5).
        refit_every: optimizer steps between full-distillation probes (default 50; the trainer also probes step 0).
        stat_decay: EMA decay of g per refit (default 0.7).
        rank_limit: R, ranks with an exact order; default min(C, max(4K, 1024)).
        num_bins: log-spaced rank bins of the statistic (default 128).
        em_iterations: EM iterations per refit (default 30, warm-started).
        initial_mixture: dict with `weights`, `locs`, `scales` (length M); default the reconstruction's start
            (docs/method.md): (0.6, 0.2, 0.2), (0, 10, 100), (2, 20, 500) for M = 3.
    """

    name = "dis"

    def __init__(
        self,
        num_classes: int,
        num_sampled: int,
        *,
        num_components: int = 3,
        prior_min_weight: float = 0.5,
        refit_every: int = 50,
        stat_decay: float = 0.7,
        rank_limit: int | None = None,
        num_bins: int = 128,
        em_iterations: int = 30,
        initial_mixture: dict[str, Any] | None = None,
        **options,
    ) -> None:
        super().__init__(num_classes, num_sampled, **options)
        check_count(num_components, "num_components")
        check_fraction(prior_min_weight, "prior_min_weight")
        check_count(refit_every, "refit_every")
        check_fraction(stat_decay, "stat_decay")
        if num_bins < 1 or em_iterations < 1:
            raise ValueError(f"num_bins and em_iterations must be >= 1, got {num_bins} and {em_iterations}.")
        rank_limit = rank_limit if rank_limit is not None else min(num_classes, max(4 * num_sampled, 1024))
        if not 1 <= rank_limit <= num_classes:
            raise ValueError(f"rank_limit must be in [1, {num_classes}], got {rank_limit}.")
        self.prior_min_weight = prior_min_weight
        self.refit_every = refit_every
        self.stat_decay = stat_decay
        self.rank_limit = rank_limit
        self.em_iterations = em_iterations
        self.edges = log_rank_bins(num_classes, num_bins)
        self.mixture = _initial_mixture(num_components, initial_mixture)
        #: EMA of g per rank bin (mean per rank within the bin); None before the first probe.
        self.interaction: torch.Tensor | None = None
        self.num_updates = 0
        self._rank_proposal_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- the proposal over ranks ----------------------------------------------------------------------------------

    def rank_probs(self, num_ranks: int | None = None) -> torch.Tensor:
        """`[C]` float64 proposal over teacher ranks: the mixture with the eps floor; with `num_ranks`, only its first
        `num_ranks` entries (all that the draws read: the tail's mass is the rest), at a fraction of the cost."""
        num_ranks = self.num_classes if num_ranks is None else num_ranks
        mixture_probs = self.mixture.bin_probs(torch.arange(num_ranks + 1), self.num_classes)
        return (1 - self.eps) * mixture_probs + self.eps / self.num_classes

    def _rank_proposal(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cached until the next refit, so that a step reads them instead of computing them: `[R + 1]` q of ranks
        0..R-1, then the tail's total mass (ranks >= R: what the per-example draws pick ranks from); `[R + 1]` q of
        the class at each of those ranks, then of one tail class (0 when R = C); and `[R + 1]` their log inclusion
        probabilities."""
        if device not in self._rank_proposal_cache:
            head = self.rank_probs(self.rank_limit)
            tail = (1 - head.sum()).clamp_min(0.0) if self.rank_limit < self.num_classes else torch.zeros(())
            probs = torch.cat([head, tail.reshape(1).to(head.dtype)]).float().to(device)
            class_q = torch.cat([probs[:-1], probs[-1:] / max(self.num_classes - self.rank_limit, 1)])
            self._rank_proposal_cache[device] = (probs, class_q, inclusion_log_prob(class_q, self.num_sampled))
        return self._rank_proposal_cache[device]

    def _ranks_drawn_from(self) -> int:
        return self.rank_limit

    def _draw(
        self, teacher_logits: TeacherLogits, generator: torch.Generator, ranked_classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, num_classes, num_ranks = teacher_logits.shape[0], self.num_classes, self.rank_limit
        top = ranked_classes[:, :num_ranks]  # [B, R]: class id at each rank
        probs, class_q, rank_log_pi = self._rank_proposal(teacher_logits.device)
        if self.scope == "batch":
            return self._draw_batch(top, class_q, generator)
        ranks = torch.multinomial(probs, batch_size * self.num_sampled, replacement=True, generator=generator)
        ranks = ranks.view(batch_size, self.num_sampled)  # rank R stands for the tail
        classes = top.gather(1, ranks.clamp(max=num_ranks - 1))
        if num_ranks < num_classes:
            tail_classes = _uniform_outside(top, num_classes, self.num_sampled, generator)
            classes = torch.where(ranks < num_ranks, classes, tail_classes)
        return classes, rank_log_pi[ranks]

    def _draw_batch(self, top: torch.Tensor, class_q: torch.Tensor, generator: torch.Generator):
        """Draw from Q(j) = mean_b q_b(j), built sparsely: every class gets the per-class tail mass, plus each
        example's head ranks."""
        batch_size, num_ranks = top.shape
        tail_q = class_q[num_ranks]  # stays on the device
        batch_q = tail_q.expand(self.num_classes).clone()
        batch_q.index_add_(0, top.flatten(), (class_q[:num_ranks] - tail_q).repeat(batch_size) / batch_size)
        classes = torch.multinomial(batch_q, self.num_sampled, replacement=True, generator=generator)
        return classes, inclusion_log_prob(batch_q[classes], self.num_sampled)

    # --- adaptation -----------------------------------------------------------------------------------------------

    def probe_statistic(
        self, teacher_logits: TeacherLogits, student_logits: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """`[n]` float64: g(r), averaged within each rank bin of `edges`, from a full-distillation probe batch
        (`teacher_ranks` orders the classes)."""
        check_temperature(temperature)
        check_same_classes(student_logits, teacher_logits)
        p_t = torch.softmax(as_dense(teacher_logits).detach().float() / temperature, dim=-1)
        p_s = torch.softmax(student_logits.detach().float() / temperature, dim=-1)
        return self.interaction_statistic((p_s - p_t).abs(), teacher_ranks(teacher_logits))

    def interaction_statistic(self, abs_difference: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """`[n]` float64: the probe statistic's share of the entries `abs_difference [B, n']` (|p_s - p_t| of a
        probe batch at classes whose teacher ranks are `ranks [B, n']`): their sum within each rank bin, over B times
        the bin's width. Over all C classes it is `probe_statistic`; a sharded classifier's processes each give the
        share of the classes they own, and the sum of the shares is the statistic."""
        edges = self.edges.to(ranks.device)
        bins = torch.bucketize(ranks.flatten(), edges[1:], right=True)
        sums = torch.zeros(edges.numel() - 1, dtype=torch.float64, device=ranks.device)
        sums.index_add_(0, bins, abs_difference.flatten().double())
        return (sums / (abs_difference.shape[0] * (edges[1:] - edges[:-1]))).cpu()

    def observe(self, interaction_bins: torch.Tensor) -> None:
        """Fold a binned g (`[n]`, from `probe_statistic`, e.g. averaged over processes) into the EMA and refit."""
        interaction_bins = interaction_bins.detach().double().cpu()
        if interaction_bins.shape != (self.edges.numel() - 1,):
            raise ValueError(
                f"interaction_bins must have shape ({self.edges.numel() - 1},) (one value per rank bin of "
                f"sampler.edges), got {tuple(interaction_bins.shape)}."
            )
        if self.interaction is None:
            self.interaction = interaction_bins
        else:
            self.interaction = self.stat_decay * self.interaction + (1 - self.stat_decay) * interaction_bins
        self.num_updates += 1
        masses = self.interaction * (self.edges[1:] - self.edges[:-1])
        if float(masses.sum()) > 0:  # a student identical to its teacher gives no signal: keep the last fit
            self.mixture = fit_laplace_mixture(
                self.edges,
                masses,
                self.num_classes,
                self.mixture,
                prior_min_weight=self.prior_min_weight,
                iterations=self.em_iterations,
            )
            self._rank_proposal_cache.clear()

    def summary(self) -> dict[str, float]:
        """The mixture: weight_i, loc_i, scale_i for each component i (component 0 is the prior)."""
        lists = self.mixture.to_lists()
        return {
            f"{name[:-1]}_{index}": float(value)
            for name in ("weights", "locs", "scales")
            for index, value in enumerate(lists[name])
        }

    # --- state ----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["mixture"] = self.mixture.to_lists()
        state["interaction"] = None if self.interaction is None else self.interaction.tolist()
        state["num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_name(state)  # before reading DIS fields, so that a foreign state gets the clear message
        mixture = LaplaceMixture.from_lists(**state["mixture"])
        if mixture.weights.numel() != self.mixture.weights.numel():
            raise ValueError(
                f"saved mixture has {mixture.weights.numel()} components, this sampler {self.mixture.weights.numel()}."
            )
        interaction = state["interaction"]
        if interaction is not None and len(interaction) != self.edges.numel() - 1:
            raise ValueError(
                f"saved statistic has {len(interaction)} rank bins, this sampler {self.edges.numel() - 1}."
            )
        super().load_state_dict(state)
        self.mixture = mixture
        self.interaction = None if interaction is None else torch.tensor(interaction, dtype=torch.float64)
        self.num_updates = int(state["num_updates"])
        self._rank_proposal_cache.clear()


def _initial_mixture(num_components: int, initial: dict[str, Any] | None) -> LaplaceMixture:
    if initial is not None:
        mixture = LaplaceMixture.from_lists(initial["weights"], initial["locs"], initial["scales"])
        if mixture.weights.numel() != num_components:
            raise ValueError(
                f"initial_mixture has {mixture.weights.numel()} components, num_components={num_components}."
            )
        return mixture
    if num_components == 3:
        return LaplaceMixture.from_lists(**RECONSTRUCTED_INITIAL_MIXTURE)
    # The reconstruction's start generalised: the prior holds 0.6, the others share the rest at ranks 10, 100, 1000, ...
    others = num_components - 1
    weights = [0.6 if others else 1.0] + [0.4 / others] * others
    locs = [0.0] + [10.0**m for m in range(1, num_components)]
    scales = [2.0] + [2.0 * 10.0**m for m in range(1, num_components)]
    return LaplaceMixture.from_lists(weights, locs, scales)


def sorted_rows(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each row of `ids [B, R]` (class ids below `num_classes`) in increasing order, as `ids.sort(dim=-1).values`:
    offset by num_classes per row, sorted as one flat tensor (a single sort of B x R values runs several times
    faster on a CPU than B row sorts), in int32 where the offsets fit."""
    offsets = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1) * num_classes
    dtype = torch.int32 if ids.shape[0] * num_classes <= torch.iinfo(torch.int32).max else torch.int64
    flat = (ids + offsets).to(dtype).flatten().sort().values
    return (flat.view(ids.shape) - offsets).to(ids.dtype)


def _uniform_outside(top: torch.Tensor, num_classes: int, num_draws: int, generator: torch.Generator) -> torch.Tensor:
    """`[B, K]` classes drawn uniformly among those NOT in each row of `top [B, R]`.

    The u-th class of the complement is u + #{i : s_i - i <= u} for the sorted excluded ids s (s_i - i counts the
    complement's classes below s_i), so one searchsorted maps uniform indices to class ids.
    """
    batch_size, num_excluded = top.shape
    excluded = sorted_rows(top, num_classes)
    below = excluded - torch.arange(num_excluded, device=top.device)
    u = torch.randint(num_classes - num_excluded, (batch_size, num_draws), generator=generator, device=top.device)
    return u + torch.searchsorted(below, u, right=True)
