import math

import pytest
import torch
import torch.nn.functional as F

import hf_dis
from hf_dis._checks import check_logits
from hf_dis.losses import ESTIMATORS
from hf_dis.sampling import SampledClasses


def hinton_kd_reference(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t || p_s), batch mean, written from the definition with explicit sums, in float64."""
    total = 0.0
    for s_row, t_row in zip(student.double(), teacher.double(), strict=True):
        p_t = [math.exp(v / temperature) for v in t_row.tolist()]
        p_s = [math.exp(v / temperature) for v in s_row.tolist()]
        z_t, z_s = sum(p_t), sum(p_s)
        total += sum((a / z_t) * math.log((a / z_t) / (b / z_s)) for a, b in zip(p_t, p_s, strict=True))
    return torch.tensor(total / student.shape[0] * temperature**2, dtype=torch.float64)


def logits(seed: int, batch: int = 6, classes: int = 37, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g) * scale, torch.randn(batch, classes, generator=g) * scale


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_kd_loss_matches_hinton_formula(temperature):
    student, teacher = logits(0)
    expected = hinton_kd_reference(student, teacher, temperature)
    torch.testing.assert_close(hf_dis.kd_loss(student, teacher, temperature).double(), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 16.0])
def test_symmetric_kd_is_the_mean_of_both_kl_directions(temperature):
    """`divergence="symmetric"`: T^2 (KL(p_t || p_s) + KL(p_s || p_t)) / 2, against the definition in float64 (the
    reverse direction is the forward formula with the roles swapped), and its gradient against float64 autograd."""
    student, teacher = logits(2)
    expected = (
        hinton_kd_reference(student, teacher, temperature) + hinton_kd_reference(teacher, student, temperature)
    ) / 2
    student = student.clone().requires_grad_(True)
    loss = hf_dis.kd_loss(student, teacher, temperature, divergence="symmetric")
    torch.testing.assert_close(loss.double(), expected, atol=1e-6, rtol=1e-6)
    reference_student = student.detach().double().requires_grad_(True)
    log_p_s = F.log_softmax(reference_student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher.double() / temperature, dim=-1)
    both = (log_p_t.exp() * (log_p_t - log_p_s) + log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)
    (both.mean() / 2 * temperature**2).backward()
    loss.backward()
    torch.testing.assert_close(student.grad.double(), reference_student.grad, atol=1e-6, rtol=1e-5)
    forward = hf_dis.kd_loss(student.detach(), teacher, temperature)
    assert not torch.allclose(loss.detach(), forward)  # the two divergences differ on these logits
    with pytest.raises(ValueError, match="divergence must be one of"):
        hf_dis.kd_loss(student, teacher, temperature, divergence="reverse")


@pytest.mark.parametrize("scope", ["per_example", "batch"])
def test_sampled_symmetric_kd_with_all_classes_equals_full_symmetric_kd(scope):
    student, teacher = logits(3)
    drawn = hf_dis.build_sampler("full", 37, None, scope=scope).sample(teacher)
    classes = drawn.classes.expand(student.shape[0], -1)
    student_full, student_sampled = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    full = hf_dis.kd_loss(student_full, teacher, 4.0, divergence="symmetric")
    sampled = hf_dis.sampled_kd_loss(student_sampled.gather(1, classes), teacher.gather(1, classes), drawn.log_pi,
                                     4.0, drawn.mask, divergence="symmetric")  # fmt: skip
    torch.testing.assert_close(sampled, full, atol=1e-6, rtol=1e-6)
    full.backward()
    sampled.backward()
    torch.testing.assert_close(student_sampled.grad, student_full.grad, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="self-normalised estimator only"):
        hf_dis.sampled_kd_loss(student.gather(1, classes), teacher.gather(1, classes), drawn.log_pi, 4.0,
                               estimator="horvitz_thompson", divergence="symmetric",
                               teacher_log_partition=torch.logsumexp(teacher / 4.0, dim=-1))  # fmt: skip


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("log_q_correction", [True, False])
def test_sampled_kd_with_all_classes_equals_full_kd(estimator, scope, log_q_correction):
    student, teacher = logits(1)
    temperature = 2.0
    drawn = hf_dis.build_sampler("full", 37, None, scope=scope).sample(teacher)
    classes = drawn.classes.expand(student.shape[0], -1)
    student_full = student.clone().requires_grad_(True)
    student_sampled = student.clone().requires_grad_(True)
    full = hf_dis.kd_loss(student_full, teacher, temperature)
    sampled = hf_dis.sampled_kd_loss(
        student_sampled.gather(1, classes),
        teacher.gather(1, classes),
        drawn.log_pi,
        temperature,
        drawn.mask,
        estimator=estimator,
        log_q_correction=log_q_correction,
        teacher_log_partition=torch.logsumexp(teacher / temperature, dim=-1),
    )
    torch.testing.assert_close(sampled, full, atol=1e-6, rtol=1e-6)
    full.backward()
    sampled.backward()
    torch.testing.assert_close(student_sampled.grad, student_full.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("log_q_correction", [True, False])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("scale", [3.0, 300.0])  # 300: logits far apart, where the dropped entries' offset must hold
def test_masked_duplicates_are_ignored(log_q_correction, label_smoothing, scale):
    """Values and gradients with dropped duplicates equal those of the set without them, for both estimators, with
    and without the correction and label smoothing; the dropped entries get exactly zero gradient."""
    student, teacher = logits(2, batch=2, classes=8, scale=scale)
    classes = torch.tensor([[0, 3, 5, 3], [1, 2, 2, 7]])
    log_pi = torch.tensor([[0.0, -0.5, -1.0, -0.5], [0.0, -0.2, -0.2, -2.0]])
    mask = torch.tensor([[False, False, False, True], [False, False, True, False]])
    kept = torch.tensor([[0, 3, 5], [1, 2, 7]])
    kept_log_pi = torch.tensor([[0.0, -0.5, -1.0], [0.0, -0.2, -2.0]])
    labels = torch.tensor([3, 2])  # each label also has a dropped copy
    partition = torch.logsumexp(teacher / 2.0, dim=-1)

    def loss_and_grad(columns, columns_log_pi, columns_mask, estimator):
        student_S = student.gather(1, columns).requires_grad_(True)
        options = {"log_q_correction": log_q_correction}
        kd = hf_dis.sampled_kd_loss(
            student_S,
            teacher.gather(1, columns),
            columns_log_pi,
            2.0,
            columns_mask,
            estimator=estimator,
            teacher_log_partition=partition,
            **options,
        )
        ce = hf_dis.sampled_cross_entropy(
            student_S, columns, labels, columns_log_pi, columns_mask, label_smoothing=label_smoothing, **options
        )
        (kd + ce).backward()
        return kd.detach(), ce.detach(), student_S.grad

    for estimator in ESTIMATORS:
        kd_dup, ce_dup, grad_dup = loss_and_grad(classes, log_pi, mask, estimator)
        kd, ce, grad = loss_and_grad(kept, kept_log_pi, None, estimator)
        torch.testing.assert_close(kd_dup, kd)
        torch.testing.assert_close(ce_dup, ce)
        assert torch.equal(grad_dup[mask], torch.zeros(2))
        torch.testing.assert_close(grad_dup[~mask].view(2, 3), grad)


def test_masked_duplicates_are_ignored_in_the_batch_scope():
    """One S for the batch (`[K']` classes, log pi and mask) with a dropped duplicate: as the set without it."""
    student, teacher = logits(4, batch=3, classes=9)
    classes, kept = torch.tensor([4, 1, 6, 1]), torch.tensor([4, 1, 6])
    log_pi, kept_log_pi = torch.tensor([-0.3, -0.7, -1.2, -0.7]), torch.tensor([-0.3, -0.7, -1.2])
    mask = torch.tensor([False, False, False, True])
    labels = torch.tensor([4, 1, 6])
    for estimator in ESTIMATORS:
        parts = [
            hf_dis.sampled_distillation_loss(
                student[:, columns],
                teacher,
                SampledClasses(columns, columns_log_pi, columns_mask),
                labels,
                2.0,
                0.3,
                estimator=estimator,
                label_smoothing=0.1,
            )
            for columns, columns_log_pi, columns_mask in (
                (classes, log_pi, mask),
                (kept, kept_log_pi, torch.zeros(3, dtype=torch.bool)),
            )
        ]
        torch.testing.assert_close(parts[0].kd_loss, parts[1].kd_loss)
        torch.testing.assert_close(parts[0].ce_loss, parts[1].ce_loss)


def test_self_normalized_is_zero_when_student_matches_teacher_on_S():
    _, teacher = logits(3)
    drawn = hf_dis.build_sampler("ftis", 37, 8, seed=3, proposal_temperature=3.0).sample(
        teacher, torch.zeros(6, dtype=torch.long)
    )
    teacher_S = teacher.gather(1, drawn.classes)
    loss = hf_dis.sampled_kd_loss(teacher_S + 5.0, teacher_S, drawn.log_pi, 3.0, drawn.mask)  # shift-invariant
    assert abs(loss.item()) < 1e-6


@pytest.mark.parametrize("scope", ["per_example", "batch"])
def test_sampled_cross_entropy_with_all_classes_equals_cross_entropy(scope):
    student, _ = logits(4)
    labels = torch.tensor([0, 5, 36, 12, 12, 3])
    drawn = hf_dis.build_sampler("full", 37, None, scope=scope).sample(student, labels)
    classes = drawn.classes.expand(6, -1)
    loss = hf_dis.sampled_cross_entropy(student.gather(1, classes), drawn.classes, labels, drawn.log_pi, drawn.mask)
    torch.testing.assert_close(loss, F.cross_entropy(student, labels))


def test_sampled_cross_entropy_applies_log_q_correction_to_non_labels():
    student = torch.tensor([[2.0, 1.0, 0.5]])
    classes = torch.tensor([[0, 1, 2]])
    log_pi = torch.tensor([[0.0, math.log(0.5), math.log(0.25)]])
    expected = -(2.0 - math.log(math.exp(2.0) + math.exp(1.0) / 0.5 + math.exp(0.5) / 0.25))
    loss = hf_dis.sampled_cross_entropy(student, classes, torch.tensor([0]), log_pi)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    uncorrected = hf_dis.sampled_cross_entropy(student, classes, torch.tensor([0]), log_pi, log_q_correction=False)
    assert uncorrected.item() == pytest.approx(F.cross_entropy(student, torch.tensor([0])).item(), rel=1e-6)


def test_sampled_cross_entropy_needs_the_label_in_S():
    student = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="label 9 is not in the sampled classes"):
        hf_dis.sampled_cross_entropy(student, torch.tensor([0, 1, 2]), torch.tensor([1, 9]), torch.zeros(3))


def test_bf16_autocast_is_stable_and_float32():
    student, teacher = logits(5, scale=300.0)  # large logits: naive exp overflows in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = hf_dis.kd_loss(student.bfloat16(), teacher.bfloat16(), 1.0)
        drawn = hf_dis.build_sampler("uniform", 37, 10, seed=0).sample(
            teacher.bfloat16(), torch.zeros(6, dtype=torch.long)
        )
        sampled = hf_dis.sampled_kd_loss(
            student.bfloat16().gather(1, drawn.classes),
            teacher.bfloat16().gather(1, drawn.classes),
            drawn.log_pi,
            1.0,
            drawn.mask,
        )
    assert loss.dtype == sampled.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(sampled)
    reference = hf_dis.kd_loss(student.bfloat16().float(), teacher.bfloat16().float(), 1.0)
    torch.testing.assert_close(loss, reference)


def test_loss_errors_name_the_offending_value():
    student, teacher = logits(6)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        hf_dis.kd_loss(student, teacher, 0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -1.0"):
        hf_dis.sampled_kd_loss(student, teacher, torch.zeros(37), -1.0)
    with pytest.raises(ValueError, match="got 37 and 36"):
        hf_dis.kd_loss(student, teacher[:, :36], 1.0)
    bad = teacher.clone()
    bad[2, 4] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        hf_dis.kd_loss(student, bad, 1.0)
    bad[2, 4] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        hf_dis.kd_loss(student, bad, 1.0)
    with pytest.raises(ValueError, match="teacher_logits_S must be finite, found inf"):
        hf_dis.sampled_kd_loss(student, bad, torch.zeros(37), 1.0)
    with pytest.raises(ValueError, match="'horvitz_thompson' needs teacher_log_partition"):
        hf_dis.sampled_kd_loss(student, teacher, torch.zeros(37), 1.0, estimator="horvitz_thompson")
    with pytest.raises(ValueError, match="Unknown estimator 'ht'"):
        hf_dis.sampled_kd_loss(student, teacher, torch.zeros(37), 1.0, estimator="ht")


def test_value_checks_follow_hf_dis_check_values(monkeypatch):
    """Value checks read results back from the device: on by default on the CPU (tested above), off with
    HF_DIS_CHECK_VALUES=0 (as on accelerators by default), the shape checks still on."""
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    teacher[1, 2] = float("inf")
    monkeypatch.setenv("HF_DIS_CHECK_VALUES", "0")
    assert not torch.isfinite(hf_dis.kd_loss(student, teacher, 1.0))
    with pytest.raises(IndexError):  # label 9: not our ValueError but torch's own indexing error
        hf_dis.distillation_loss(student, torch.randn(3, 5), torch.tensor([0, 9, 1]), 1.0, 0.5)
    with pytest.raises(ValueError, match="labels must have shape"):
        hf_dis.distillation_loss(student, torch.randn(3, 5), torch.tensor([0, 1]), 1.0, 0.5)
    monkeypatch.setenv("HF_DIS_CHECK_VALUES", "1")
    with pytest.raises(ValueError, match="teacher_logits must be finite"):
        hf_dis.kd_loss(student, teacher, 1.0)
    check_logits(torch.full((2, 40000), 60000.0, dtype=torch.float16), "logits")  # finite; only their sum overflows


def test_distillation_loss_parts_and_label_checks():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 5, 2, 1])
    parts = hf_dis.distillation_loss(student, teacher, labels, 2.0, 0.25)
    torch.testing.assert_close(parts.loss, 0.25 * parts.ce_loss + 0.75 * parts.kd_loss)
    torch.testing.assert_close(parts.ce_loss, F.cross_entropy(student, labels))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\), found 6"):
        hf_dis.distillation_loss(student, teacher, torch.tensor([0, 6, 2, 1]), 2.0, 0.25)
    with pytest.raises(ValueError, match="no labels, so alpha must be 0"):
        hf_dis.distillation_loss(student, teacher, None, 2.0, 0.25)
    assert hf_dis.distillation_loss(student, teacher, None, 2.0, 0.0).ce_loss is None


def test_kd_weight_replaces_one_minus_alpha_in_every_objective():
    """With kd_weight the KD term is weighted by it, not by 1 - alpha: the full and the sampled objective (all classes
    drawn), with and without labels; the parts themselves do not change."""
    student, teacher = logits(3)
    labels = torch.tensor([0, 5, 2, 1, 36, 7])
    everything = SampledClasses(
        torch.arange(37), torch.zeros(37), torch.zeros(37, dtype=torch.bool)
    )  # one set for the batch: every class, each with probability 1
    for label_set, alpha in ((labels, 1.0), (labels, 0.4), (None, 0.0)):
        convex = hf_dis.distillation_loss(student, teacher, label_set, 2.0, alpha)
        full = hf_dis.distillation_loss(student, teacher, label_set, 2.0, alpha, kd_weight=2.5)
        sampled = hf_dis.sampled_distillation_loss(student, teacher, everything, label_set, 2.0, alpha, kd_weight=2.5)
        ce = 0.0 if label_set is None else alpha * convex.ce_loss
        torch.testing.assert_close(full.kd_loss, convex.kd_loss)
        torch.testing.assert_close(full.loss, ce + 2.5 * hinton_kd_reference(student, teacher, 2.0).float())
        torch.testing.assert_close(sampled.loss, full.loss)
