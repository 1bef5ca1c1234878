import dataclasses
import json
import math

import pytest
import torch

import hf_dis
from hf_dis.data.cached_logits import CachedTeacherLogits
from hf_dis.diagnostics import sampled_gradient_error
from hf_dis.losses import logits_at
from hf_dis.sampling import LaplaceMixture
from hf_dis.sampling.dis import log_rank_bins, teacher_ranks

DRAWING = ["uniform", "ftis", "dis"]
ALL = ["full", "uniform", "topk", "ftis", "dis"]


def make_batch(seed: int, batch: int = 4, classes: int = 50, scale: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, classes, generator=g) * scale
    student = torch.randn(batch, classes, generator=g) * scale / 2
    labels = torch.randint(classes, (batch,), generator=g)
    return teacher, student, labels


def build(name: str, num_classes: int = 50, num_sampled: int = 10, **options):
    if name in ("ftis", "topk"):
        options.setdefault("proposal_temperature", 1.0)
    return hf_dis.build_sampler(name, num_classes, None if name == "full" else num_sampled, **options)


# --- unbiasedness --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["self_normalized", "horvitz_thompson"])
@pytest.mark.parametrize("name", DRAWING)
def test_mean_sampled_gradient_approaches_full_gradient_as_K_grows(name, estimator):
    teacher, student, _ = make_batch(0)
    repeats = 3000
    errors = []
    for k in (5, 20, 40):
        sampler = build(
            name, num_sampled=k, force_label=False, seed=k, **({"proposal_temperature": 3.0} if name == "ftis" else {})
        )
        errors.append(sampled_gradient_error(sampler, teacher, student, 3.0, num_repeats=repeats, estimator=estimator))
    rel = [e.relative_error for e in errors]
    # Monte Carlo noise of a mean over `repeats` draws, in the same relative units.
    noise = [3 * e.relative_std / math.sqrt(repeats) for e in errors]
    assert rel[1] < rel[0] and rel[2] < rel[1], rel
    assert rel[2] < 0.12 + noise[2], (rel, noise)


def test_batch_scope_gradient_is_consistent():
    teacher, student, _ = make_batch(1)
    errors = [
        sampled_gradient_error(
            build("dis", num_sampled=k, scope="batch", force_label=False, seed=k),
            teacher,
            student,
            3.0,
            num_repeats=400,
        )
        for k in (5, 40)
    ]
    assert errors[1].relative_error < 0.5 * errors[0].relative_error


@pytest.mark.parametrize("name", ["uniform", "topk", "ftis", "dis"])
def test_batch_scope_takes_every_class_when_its_columns_would_reach_C(name):
    """Batch scope, 10 forced labels + 10 forced teacher top-1 + K draws >= C = 50 columns: S is every class with
    pi = 1 and the sampled objective is exactly the full one; with one column fewer, S is drawn."""
    teacher, student, labels = make_batch(2, batch=10, classes=50)
    drawn = build(name, num_sampled=30, scope="batch").sample(teacher, labels)
    assert torch.equal(drawn.classes, torch.arange(50)) and not drawn.mask.any() and not drawn.log_pi.any()
    sampled = hf_dis.sampled_distillation_loss(logits_at(student, drawn.classes), teacher, drawn, labels, 2.0, 0.3)
    full = hf_dis.distillation_loss(student, teacher, labels, 2.0, 0.3)
    torch.testing.assert_close(sampled.loss, full.loss)
    assert build(name, num_sampled=29, scope="batch").sample(teacher, labels).classes.numel() == 49


@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("name", ["uniform", "topk", "ftis", "dis"])
def test_a_given_ranking_stands_in_for_ranking_the_logits(name, scope, monkeypatch):
    """A teacher cache's ranking (its top R' classes in order) gives the same S as ranking the logits, without a
    top-k selection over the C classes; a reversed ranking gives another S (so the ranking is what is read)."""
    teacher, _, labels = make_batch(4, batch=6, classes=3000)
    sampler = build(name, num_classes=3000, num_sampled=20, scope=scope)  # DIS: the top R = 1,024 ranks
    ranked = teacher.topk(1100).indices

    def draw(ranked_classes: torch.Tensor | None):
        return sampler.sample(teacher, labels, torch.Generator().manual_seed(0), ranked_classes=ranked_classes)

    reference = draw(None)
    topk = torch.Tensor.topk

    def topk_but_not_over_the_classes(tensor, *args, **kwargs):
        assert tensor.shape[-1] != 3000 or tensor.dim() == 1, "a top-k selection over every example's C classes"
        return topk(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", topk_but_not_over_the_classes)
    cached = draw(ranked)
    for field in ("classes", "log_pi", "mask"):
        assert torch.equal(getattr(cached, field), getattr(reference, field)), field
    assert not torch.equal(draw(ranked.flip(-1)).classes, reference.classes)
    with pytest.raises(ValueError, match="ranked_classes must be \\[batch=6, R\\], got \\(5, 1100\\)"):
        draw(ranked[:5])


def cache_columns(seed: int, batch: int, classes: int, ranked: int) -> hf_dis.data.CachedTeacherLogits:
    """Teacher cache columns as `cache_teacher_logits` writes them: the top R classes in order, one tail logit."""
    logits = torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed)) * 4
    top = logits.topk(ranked, dim=1)
    tail = torch.full((batch,), -torch.inf)
    if ranked < classes:
        tail = logits.scatter(1, top.indices, -torch.inf).logsumexp(1) - math.log(classes - ranked)
    return hf_dis.data.CachedTeacherLogits(top.indices.int(), top.values, tail, classes)


@pytest.mark.parametrize("ranked", [40, 300])
def test_cache_columns_read_as_their_dense_logits(ranked):
    """Values at any classes (ranked or in the tail, one set per example or one for the batch) and the
    log-partition over C, read from the columns, equal those of the rebuilt [B, C] logits."""
    cached = cache_columns(0, batch=6, classes=300, ranked=ranked)
    dense = cached.dense()
    assert cached.shape == dense.shape == (6, 300)
    per_example = torch.randint(300, (6, 50), generator=torch.Generator().manual_seed(1))
    per_example[:, 0] = cached.top_classes[:, 0]  # the ranked classes' values, not only the tail's
    if ranked < 300:
        assert bool((dense.gather(1, per_example) == cached.tail_logit.unsqueeze(1)).any())
    shared = torch.arange(0, 300, 7)
    for read in (cached.at, cached.lookup):  # `at` forms the dense logits at this C; `lookup` never does
        assert torch.equal(read(per_example), dense.gather(1, per_example))
        assert torch.equal(read(shared), dense[:, shared])
    for temperature in (1.0, 4.0):
        torch.testing.assert_close(cached.log_partition(temperature), torch.logsumexp(dense / temperature, dim=1))
    with pytest.raises(ValueError, match="several augmented views"):
        hf_dis.data.CachedTeacherLogits(cached.top_classes[:, None], cached.top_logits[:, None], cached.tail_logit, 300)
    with pytest.raises(ValueError, match="more than C"):
        hf_dis.data.CachedTeacherLogits(cached.top_classes, cached.top_logits, cached.tail_logit, ranked - 1)


@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("name", ["uniform", "topk", "ftis", "dis"])
def test_cache_columns_draw_and_score_as_their_dense_logits(name, scope, monkeypatch):
    """Given the cache columns instead of their [B, C] logits, a sampler draws the same S, and the sampled losses
    and statistics are the same; only a proposal over every class's logit (FTIS, top-k of the batch) forms them."""
    from hf_dis.diagnostics import sampled_set_stats

    cached = cache_columns(2, batch=6, classes=3000, ranked=1100)
    dense, labels = cached.dense(), torch.arange(6) * 17
    sampler = build(name, num_classes=3000, num_sampled=20, scope=scope)  # DIS: the top R = 1,024 ranks
    reference = sampler.sample(dense, labels, torch.Generator().manual_seed(0), ranked_classes=cached.top_classes)
    formed = []
    dense_of = hf_dis.data.CachedTeacherLogits.dense
    monkeypatch.setattr(hf_dis.data.CachedTeacherLogits, "dense", lambda self: formed.append(1) or dense_of(self))
    drawn = sampler.sample(cached, labels, torch.Generator().manual_seed(0))
    for field in ("classes", "log_pi", "mask"):
        assert torch.equal(getattr(drawn, field), getattr(reference, field)), field
    assert bool(formed) == (name == "ftis" or (name == "topk" and scope == "batch"))
    student_S = torch.randn(drawn.classes.expand(6, -1).shape, generator=torch.Generator().manual_seed(3))
    for estimator in ("self_normalized", "horvitz_thompson"):
        loss = hf_dis.sampled_distillation_loss(student_S, cached, drawn, labels, 2.0, 0.3, estimator=estimator)
        expected = hf_dis.sampled_distillation_loss(student_S, dense, drawn, labels, 2.0, 0.3, estimator=estimator)
        torch.testing.assert_close(loss.loss, expected.loss)
    stats, expected_stats = sampled_set_stats(cached, drawn, 2.0), sampled_set_stats(dense, drawn, 2.0)
    for key, value in expected_stats.items():
        torch.testing.assert_close(stats[key], value, msg=key)
    with pytest.raises(ValueError, match="teacher_logits has 3000 classes, expected 50"):
        build(name, scope=scope).sample(cached, labels)


@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("name", ["uniform", "topk", "ftis", "dis"])
def test_one_ranking_serves_the_forced_classes_and_the_draws(name, scope, monkeypatch):
    """The teacher's top-m forced classes and the ranks a sampler draws from come from one top-k selection over the
    C classes per call (at 10^6 classes each selection reads the whole [B, C] logits)."""
    teacher, _, labels = make_batch(5, batch=6, classes=3000)
    sampler = build(name, num_classes=3000, num_sampled=20, scope=scope, force_teacher_topk=2)
    selections = []
    topk = torch.Tensor.topk

    def counted_topk(tensor, *args, **kwargs):
        if tensor.shape[-1] == 3000 and tensor.dim() == 2:
            selections.append(args[0] if args else kwargs["k"])
        return topk(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", counted_topk)
    drawn = sampler.sample(teacher, labels, torch.Generator().manual_seed(0))
    expected = {"dis": 1024, "topk": 20 if scope == "per_example" else 2}.get(name, 2)  # DIS: its top R ranks
    assert selections == [expected]
    forced = (drawn.classes if scope == "per_example" else drawn.classes[:18].view(6, 3))[:, 1:3]  # after the label
    assert torch.equal(forced, teacher.topk(2, dim=-1).indices)


def test_topk_is_biased():
    teacher, student, _ = make_batch(0)
    topk = sampled_gradient_error(
        build("topk", num_sampled=20, force_label=False), teacher, student, 3.0, num_repeats=50
    )
    dis = sampled_gradient_error(
        build("dis", num_sampled=20, force_label=False), teacher, student, 3.0, num_repeats=3000
    )
    assert topk.relative_std == 0.0  # deterministic: more draws cannot reduce its error
    assert topk.relative_error > 0.5
    assert topk.relative_error > 4 * dis.relative_error


# --- inclusion probabilities ----------------------------------------------------------------------------------------


def _inclusion_table(draws: list[hf_dis.SampledClasses], rows: int, num_classes: int):
    counts = torch.zeros(rows, num_classes)
    pi = torch.full((rows, num_classes), float("nan"))
    for drawn in draws:
        classes = drawn.classes if drawn.classes.dim() == 2 else drawn.classes.expand(rows, -1)
        log_pi = drawn.log_pi.expand_as(classes)
        keep = ~drawn.mask.expand_as(classes)
        for row in range(rows):
            counts[row, classes[row][keep[row]]] += 1
            pi[row, classes[row][keep[row]]] = log_pi[row][keep[row]].exp()
    return counts / len(draws), pi


@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize(
    "name, options",
    [(name, {}) for name in DRAWING] + [("dis", {"rank_limit": 8, "eps": 0.2})],  # the last: DIS's uniform tail
    ids=[*DRAWING, "dis-tail"],
)
def test_empirical_inclusion_matches_pi(name, options, scope):
    num_classes, batch = 30, 3
    teacher, _, labels = make_batch(2, batch=batch, classes=num_classes, scale=2.0)
    sampler = build(name, num_classes=num_classes, num_sampled=6, scope=scope, seed=5, **options)
    repeats = 3000 if scope == "per_example" else 1500
    if scope == "per_example":  # one call, every row an independent draw
        tiled = sampler.sample(teacher.repeat(repeats, 1), labels.repeat(repeats))
        draws = [
            hf_dis.SampledClasses(c, lp, m)
            for c, lp, m in zip(
                tiled.classes.split(batch), tiled.log_pi.split(batch), tiled.mask.split(batch), strict=True
            )
        ]
    else:
        draws = [sampler.sample(teacher, labels) for _ in range(repeats)]
    frequency, pi = _inclusion_table(draws, batch, num_classes)
    seen = ~torch.isnan(pi)
    # pi is a function of the class (and example) only: every draw that includes it reports the same value.
    tolerance = 5 * torch.sqrt(pi[seen] * (1 - pi[seen]) / repeats) + 1.0 / repeats
    assert bool(((frequency[seen] - pi[seen]).abs() <= tolerance).all())
    assert bool((frequency[~seen] == 0).all())


@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("name", ALL)
def test_forced_classes_present_and_no_duplicates(name, scope):
    teacher, _, labels = make_batch(3)
    sampler = build(name, scope=scope, force_teacher_topk=2, seed=1)
    top2 = teacher.topk(2, dim=-1).indices
    for _ in range(20):
        drawn = sampler.sample(teacher, labels)
        rows = drawn.classes if drawn.classes.dim() == 2 else drawn.classes.expand(4, -1)
        keep = ~drawn.mask.expand_as(rows)
        for row in range(4):
            kept = rows[row][keep[row]].tolist()
            assert len(kept) == len(set(kept))
            assert labels[row].item() in kept and set(top2[row].tolist()) <= set(kept)
            forced_pi = drawn.log_pi.expand_as(rows)[row][(rows[row] == labels[row]) & keep[row]]
            assert forced_pi.item() == 0.0


def test_switching_the_prior_off_forces_nothing():
    teacher, _, labels = make_batch(4, classes=1000)
    drawn = build("uniform", num_classes=1000, num_sampled=3, force_label=False, force_teacher_topk=0).sample(
        teacher, labels
    )
    assert drawn.classes.shape == (4, 3)
    assert bool((drawn.log_pi < 0).all())


def test_dis_tail_draws_cover_classes_outside_the_top_ranks():
    teacher, _, labels = make_batch(5, batch=2, classes=200)
    sampler = build("dis", num_classes=200, num_sampled=64, rank_limit=16, eps=0.5, seed=0)
    drawn = sampler.sample(teacher, labels)
    top16 = teacher.topk(16, dim=-1).indices
    outside = [set(drawn.classes[r].tolist()) - set(top16[r].tolist()) for r in range(2)]
    assert all(len(o) > 10 for o in outside)
    assert int(drawn.classes.max()) < 200


# --- DIS refit ------------------------------------------------------------------------------------------------------


def test_dis_refit_recovers_a_planted_mixture():
    num_classes = 5000
    sampler = build("dis", num_classes=num_classes, num_sampled=50, prior_min_weight=0.1, em_iterations=100)
    planted = LaplaceMixture.from_lists([0.5, 0.3, 0.2], [0, 40, 400], [3, 8, 60])
    edges = sampler.edges
    g = planted.bin_probs(edges, num_classes) / (edges[1:] - edges[:-1])  # mean per rank in each bin
    sampler.observe(g)
    fit = sampler.mixture
    torch.testing.assert_close(fit.weights, planted.weights, atol=0.01, rtol=0)
    assert fit.locs[0] == 0
    torch.testing.assert_close(fit.locs[1:], planted.locs[1:], atol=1.0, rtol=0.03)
    # Scales come from the mean absolute deviation of rank-cell centres: the prior's (a one-sided, discretised
    # Laplace) reads about half a rank low; the others within 2 %.
    torch.testing.assert_close(fit.scales[1:], planted.scales[1:], atol=0, rtol=0.02)
    assert 2.3 < float(fit.scales[0]) <= 3.0


def test_dis_prior_component_keeps_its_constraints():
    num_classes = 2000
    sampler = build("dis", num_classes=num_classes, num_sampled=20, prior_min_weight=0.5)
    planted = LaplaceMixture.from_lists([0.1, 0.45, 0.45], [0, 30, 300], [2, 5, 40])
    g = planted.bin_probs(sampler.edges, num_classes) / (sampler.edges[1:] - sampler.edges[:-1])
    for _ in range(3):
        sampler.observe(g)
    assert float(sampler.mixture.locs[0]) == 0.0
    assert float(sampler.mixture.weights[0]) == pytest.approx(0.5)
    assert float(sampler.mixture.weights.sum()) == pytest.approx(1.0)


def test_dis_update_from_full_distillation_moves_the_proposal():
    teacher, student, _ = make_batch(6, batch=16, classes=500)
    sampler = build("dis", num_classes=500, num_sampled=20)
    before = sampler.rank_probs().clone()
    sampler.update(teacher, student, 2.0)
    assert sampler.num_updates == 1 and sampler.interaction is not None
    assert not torch.allclose(before, sampler.rank_probs())
    assert float(sampler.rank_probs().sum()) == pytest.approx(1.0)
    assert float(sampler.rank_probs().min()) >= sampler.eps / 500 * (1 - 1e-9)
    summary = sampler.summary()  # what the trainer logs at each refit
    assert summary["weight_0"] >= 0.5 and summary["loc_0"] == 0.0
    assert sorted(summary) == sorted(f"{p}_{i}" for p in ("weight", "loc", "scale") for i in range(3))
    assert build("uniform", num_classes=500, num_sampled=20).summary() == {}


@pytest.mark.parametrize("num_classes", [300, 100_000])
def test_dis_refit_runs_few_torch_operators(num_classes):
    # Every torch operator lets go of the GIL and takes it back: in a training process whose other threads run
    # Python (the loader's pin-memory thread), each costs up to the switch interval (5 ms). The EM ran in torch
    # (about 2,600 operators per refit) and took half of a DIS run's time in the GPU studies; it runs in numpy now.
    sampler = build("dis", num_classes=num_classes, num_sampled=num_classes // 50)
    statistic = torch.rand(sampler.edges.numel() - 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with hf_dis.diagnostics.OperatorCounter() as counter:
        sampler.observe(statistic)
        head = sampler.rank_probs(sampler.rank_limit)
    assert sampler.num_updates == 1
    assert counter.total <= 40, counter.counts
    # the head of the proposal, computed alone, is the full proposal's
    torch.testing.assert_close(head, sampler.rank_probs()[: sampler.rank_limit], rtol=1e-12, atol=0)


def test_probe_statistic_then_observe_is_update():
    teacher, student, _ = make_batch(7, batch=8, classes=300)
    by_parts, at_once = build("dis", num_classes=300, num_sampled=10), build("dis", num_classes=300, num_sampled=10)
    by_parts.observe(by_parts.probe_statistic(teacher, student, 2.0))
    at_once.update(teacher, student, 2.0)
    assert by_parts.state_dict() == at_once.state_dict()
    with pytest.raises(NotImplementedError, match="does not adapt"):
        build("ftis", num_classes=300, num_sampled=10).probe_statistic(teacher, student, 2.0)


def test_probe_statistic_is_the_binned_interaction_by_teacher_rank():
    """g(r) = mean over the batch of |p_s - p_t| at the teacher's rank r, then averaged within each rank bin: from
    dense teacher logits (ranked by a sort), and from cached ones (the stored order, then the tail classes, which
    share one logit, by class id), against a naive float64 loop."""
    teacher, student, _ = make_batch(3, batch=4, classes=300)
    top = teacher.topk(20, dim=1).indices
    cached = CachedTeacherLogits(top, teacher.gather(1, top), teacher.min(1).values - 1, 300)
    sampler = build("dis", num_classes=300, num_sampled=10)
    for teacher_logits, dense in ((teacher, teacher), (cached, cached.dense())):
        order = dense.double().argsort(dim=1, descending=True, stable=True)
        difference = (torch.softmax(student.double() / 2, 1) - torch.softmax(dense.double() / 2, 1)).abs()
        by_rank = difference.gather(1, order).mean(0)
        edges = sampler.edges.tolist()
        expected = torch.tensor([by_rank[lo:hi].mean().item() for lo, hi in zip(edges, edges[1:], strict=False)])
        statistic = sampler.probe_statistic(teacher_logits, student, 2.0)  # float32 probabilities
        torch.testing.assert_close(statistic, expected.double(), rtol=1e-5, atol=1e-8)
        # the ranks of a range of the classes, as a process of a sharded classifier computes its own
        ranks = teacher_ranks(teacher_logits)
        parts = [teacher_ranks(teacher_logits, 0, 123), teacher_ranks(teacher_logits, 123, 300)]
        assert torch.equal(ranks, torch.cat(parts, 1))
        assert torch.equal(ranks.gather(1, order), torch.arange(300).expand(4, -1))


def test_log_rank_bins_cover_every_rank_once():
    edges = log_rank_bins(10**6, 128)
    assert edges[0] == 0 and edges[-1] == 10**6
    assert bool((edges[1:] > edges[:-1]).all()) and len(edges) <= 129
    assert torch.equal(log_rank_bins(50, 128), torch.arange(51))


# --- state and reproducibility --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_reproduces_draws(name, scope):
    teacher, student, labels = make_batch(7)
    sampler = build(name, scope=scope, seed=11)
    sampler.sample(teacher, labels)
    sampler.update(teacher, student, 2.0)
    state = json.loads(json.dumps(sampler.state_dict()))  # must survive JSON (trainer_state.json)
    expected = [sampler.sample(teacher, labels) for _ in range(3)]
    restored = build(name, scope=scope, seed=999)
    restored.load_state_dict(state)
    for want in expected:
        got = restored.sample(teacher, labels)
        assert torch.equal(got.classes, want.classes) and torch.equal(got.log_pi, want.log_pi)
        assert torch.equal(got.mask, want.mask)


def test_state_of_a_sampler_that_never_drew_restores_its_seed():
    teacher, _, labels = make_batch(7)
    fresh = build("uniform", seed=21)
    restored = build("uniform", seed=5)
    restored.load_state_dict(fresh.state_dict())
    assert torch.equal(restored.sample(teacher, labels).classes, fresh.sample(teacher, labels).classes)


def test_same_seed_same_draws_and_explicit_generator_wins():
    teacher, _, labels = make_batch(8)
    a, b, c = (build("dis", seed=s) for s in (3, 3, 4))
    draws_a, draws_b, draws_c = (s.sample(teacher, labels).classes for s in (a, b, c))
    assert torch.equal(draws_a, draws_b) and not torch.equal(draws_a, draws_c)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(a.sample(teacher, labels, generator=g1).classes, c.sample(teacher, labels, generator=g2).classes)


def test_loading_state_of_another_sampler_is_an_error():
    with pytest.raises(ValueError, match="state is for sampler 'uniform', not 'dis'"):
        build("dis").load_state_dict(build("uniform").state_dict())


# --- validation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, "an integer >= 1 or a fraction in \\(0, 1\\), got 0"),
        (-3, "an integer >= 1 or a fraction in \\(0, 1\\), got -3"),
        (51, "in \\[1, num_classes=50\\], got 51"),
    ],
)
def test_bad_num_sampled(k, message):
    with pytest.raises(ValueError, match=f"num_sampled must be {message}"):
        hf_dis.build_sampler("uniform", 50, k)


def test_fractional_num_sampled():
    assert hf_dis.build_sampler("dis", 1000, 0.05).num_sampled == 50
    with pytest.raises(ValueError, match="got 1.5"):
        hf_dis.build_sampler("dis", 1000, 1.5)


def test_sampler_input_errors_name_the_value():
    teacher, _, labels = make_batch(9)
    sampler = build("ftis")
    with pytest.raises(ValueError, match="found 50"):
        sampler.sample(teacher, torch.tensor([0, 1, 50, 2]))
    with pytest.raises(ValueError, match="found -1"):
        sampler.sample(teacher, torch.tensor([0, -1, 5, 2]))
    with pytest.raises(ValueError, match="has 49 classes, expected 50"):
        sampler.sample(teacher[:, :49], labels)
    bad = teacher.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        sampler.sample(bad, labels)
    with pytest.raises(
        ValueError, match="Unknown sampler 'gumbel'; choose one of \\['dis', 'ftis', 'full', 'topk', 'uniform'\\]"
    ):
        hf_dis.build_sampler("gumbel", 50, 5)
    with pytest.raises(ValueError, match="scope must be one of"):
        build("dis", scope="global")
    with pytest.raises(ValueError, match="prior_min_weight must be in \\[0, 1\\), got 1.2"):
        build("dis", prior_min_weight=1.2)
    with pytest.raises(ValueError, match="pass None"):
        hf_dis.build_sampler("full", 50, 10)
    with pytest.raises(TypeError):
        build("uniform", proposal_temprature=2.0)  # typos are not swallowed
    with pytest.raises(ValueError, match="interaction_bins must have shape \\(50,\\)"):
        build("dis").observe(torch.ones(7))


def test_sampled_set_stats_match_their_definitions():
    from hf_dis.diagnostics import sampled_set_stats

    teacher, _, labels = make_batch(3, batch=5, classes=40)
    drawn = build("uniform", num_classes=40, num_sampled=12).sample(teacher, labels)
    stats = sampled_set_stats(teacher, drawn, 2.0)
    keep = ~drawn.mask
    p_t = torch.softmax(teacher / 2.0, dim=-1)
    mass = torch.stack([p_t[b, drawn.classes[b][keep[b]]].sum() for b in range(5)])
    weights = [
        torch.softmax(teacher[b, drawn.classes[b][keep[b]]] / 2.0 - drawn.log_pi[b][keep[b]], 0) for b in range(5)
    ]
    ess = torch.stack([1 / w.square().sum() for w in weights])
    torch.testing.assert_close(stats["teacher_mass"], mass.mean())
    torch.testing.assert_close(stats["ess"], ess.mean())
    assert float(stats["num_classes"]) == float(keep.sum(-1).float().mean())


@pytest.mark.parametrize("value", [1, 1.0, 7, 7.0, 0.25, 0.5])
def test_num_sampled_means_the_same_in_the_arguments_and_build_sampler(tmp_path, value):
    """One meaning for each accepted value (1.0 is K = 1 in both), and the same rejections with the same message."""
    from hf_dis import DistillationArguments

    args = DistillationArguments(output_dir=str(tmp_path), sampler="uniform", num_sampled=value, use_cpu=True)
    built = hf_dis.build_sampler("uniform", 40, value)
    from_args = hf_dis.build_sampler("uniform", 40, args.num_sampled_for(40))
    assert built.num_sampled == from_args.num_sampled == (round(value * 40) if value < 1 else int(value))


@pytest.mark.parametrize("value", [0, -1, 1.5, 0.0, True])
def test_num_sampled_is_rejected_alike_by_both_entry_points(tmp_path, value):
    from hf_dis import DistillationArguments

    message = "num_sampled must be an integer >= 1 or a fraction in"
    with pytest.raises(ValueError, match=message):
        DistillationArguments(output_dir=str(tmp_path), sampler="uniform", num_sampled=value, use_cpu=True)
    with pytest.raises(ValueError, match=message):
        hf_dis.build_sampler("uniform", 40, value)


# (argument, sampler, the sampler's keyword, rejected values, an accepted value)
SHARED_OPTIONS = [
    ("sample_scope", "uniform", "scope", ["both", ""], "batch"),
    ("sampler_eps", "uniform", "eps", [-0.1, 1.0, 2.0], 0.5),
    ("force_teacher_topk", "uniform", "force_teacher_topk", [-1], 3),
    ("proposal_temperature", "ftis", "proposal_temperature", [0.0, -2.0], 0.5),
    ("dis_num_components", "dis", "num_components", [0, -1], 2),
    ("dis_refit_every", "dis", "refit_every", [0, -5], 7),
    ("dis_prior_min_weight", "dis", "prior_min_weight", [-0.1, 1.0], 0.2),
    ("dis_stat_decay", "dis", "stat_decay", [-0.5, 1.0], 0.9),
]


@pytest.mark.parametrize(("argument", "sampler", "keyword", "rejected", "accepted"), SHARED_OPTIONS)
def test_each_option_is_accepted_and_rejected_alike_by_both_entry_points(
    tmp_path, argument, sampler, keyword, rejected, accepted
):
    """DistillationArguments and build_sampler share one validator per option: the same values pass, the same fail,
    with the same message but for the option's name."""
    from hf_dis import DistillationArguments

    def arguments(value):
        return DistillationArguments(output_dir=str(tmp_path), sampler=sampler, use_cpu=True, **{argument: value})

    def from_arguments(value):
        args = arguments(value)
        return hf_dis.build_sampler(sampler, 40, args.num_sampled_for(40), **args.sampler_options())

    for value in rejected:
        with pytest.raises(ValueError) as by_arguments:
            arguments(value)  # refused as the arguments are made, before a trainer or its folder exists
        with pytest.raises(ValueError) as by_hand:
            build(sampler, num_classes=40, **{keyword: value})
        assert str(by_arguments.value).replace(argument, keyword) == str(by_hand.value)
    for built in (from_arguments(accepted), build(sampler, num_classes=40, **{keyword: accepted})):
        value = built.mixture.weights.numel() if keyword == "num_components" else getattr(built, keyword)
        assert value == accepted


def test_the_arguments_defaults_are_the_samplers_defaults(tmp_path):
    """Unset, every sampler option means what build_sampler's default means (and what the help text says)."""
    import inspect

    from hf_dis import DistillationArguments
    from hf_dis.sampling import ClassSampler, DISSampler

    base = inspect.signature(ClassSampler.__init__).parameters
    args = DistillationArguments(output_dir=str(tmp_path), sampler="dis", use_cpu=True)
    assert (args.sample_scope, args.force_teacher_topk, args.sampler_eps, args.force_label) == (
        base["scope"].default,
        base["force_teacher_topk"].default,
        base["eps"].default,
        base["force_label"].default,
    )
    by_arguments = hf_dis.build_sampler("dis", 400, args.num_sampled_for(400), **args.sampler_options())
    by_hand = hf_dis.build_sampler("dis", 400, args.num_sampled_for(400))
    dis = inspect.signature(DISSampler.__init__).parameters
    helps = {field.name: field.metadata.get("help", "") for field in dataclasses.fields(DistillationArguments)}
    for name in ("num_components", "refit_every", "prior_min_weight", "stat_decay"):
        assert f"Unset: {dis[name].default}." in helps[f"dis_{name}"]
    for name in ("refit_every", "prior_min_weight", "stat_decay", "rank_limit", "eps", "force_teacher_topk"):
        assert getattr(by_arguments, name) == getattr(by_hand, name)
    torch.testing.assert_close(by_arguments.mixture.weights, by_hand.mixture.weights)


@pytest.mark.parametrize("num_classes", [50, 2**31])  # the flat offsets in int32, then past its range
def test_sorted_rows_sorts_each_row_as_a_row_sort_does(num_classes):
    from hf_dis.sampling.dis import sorted_rows

    generator = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randperm(50, generator=generator)[:20] for _ in range(7)]) * (num_classes // 50)
    result = sorted_rows(ids, num_classes)
    assert result.dtype == ids.dtype and torch.equal(result, ids.sort(dim=-1).values)
