import math

import pytest
import timm
import torch
import transformers
from tiny_models import TINY_VIT, tiny_hf
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import hf_dis
from hf_dis.diagnostics import OperatorCounter, host_sync_ops, sampled_set_stats
from hf_dis.heads import HF_HEAD_PATHS

NUM_CLASSES = 13


def tiny_timm(name: str, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs).eval()


def timm_wrapper():
    config = transformers.TimmWrapperConfig(architecture="resnet18", num_labels=NUM_CLASSES)
    torch.manual_seed(0)
    return transformers.TimmWrapperForImageClassification(config).eval()


MODELS = {
    **{f"hf-{t}": (lambda t=t: tiny_hf(t, NUM_CLASSES)) for t in HF_HEAD_PATHS},
    "timm-resnet18": lambda: tiny_timm("resnet18"),
    "timm-vit": lambda: tiny_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1),
    "timm-convnext": lambda: tiny_timm("convnext_atto"),
    "timm-mobilenetv3": lambda: tiny_timm("mobilenetv3_small_050"),
    "timm-wrapper": timm_wrapper,
}


def full_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("family", sorted(MODELS))
def test_subset_logits_equal_full_logits_at_those_classes(family):
    model = MODELS[family]()
    split = hf_dis.split_classifier(model)
    assert split.model is model and split.num_classes == NUM_CLASSES
    g = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(3, 3, 32, 32, generator=g)
    per_example = torch.randint(NUM_CLASSES, (3, 5), generator=g)
    shared = torch.randperm(NUM_CLASSES, generator=g)[:6]
    with torch.no_grad():
        expected = full_logits(model, pixel_values)
        features = split.features(pixel_values)
        torch.testing.assert_close(split.logits(features), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            split.logits(features, per_example), expected.gather(1, per_example), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(split.logits(features, shared), expected[:, shared], atol=1e-5, rtol=1e-5)


def test_subset_logits_gradient_reaches_only_the_selected_rows():
    head = nn.Linear(4, 10)
    features = torch.randn(2, 4)
    hf_dis.subset_logits(features, head, torch.tensor([1, 7])).sum().backward()
    touched = head.weight.grad.abs().sum(-1) > 0
    assert touched.nonzero().flatten().tolist() == [1, 7]


@pytest.mark.parametrize(
    "classes",
    [torch.tensor([7, 1, 4]), torch.tensor([[1, 7, 4], [7, 2, 9]]), torch.tensor([[0, 1, 2], [3, 4, 5]])],
    ids=["batch", "per_example_union", "per_example_gathered"],
)
def test_subset_logits_sparse_grad_is_the_dense_gradient_on_the_used_rows(classes, monkeypatch):
    if classes.dim() == 2 and classes[0, 0] == 0:  # force each example's own rows (the bmm path)
        monkeypatch.setattr(hf_dis.heads.split, "UNION_COST_FACTOR", 0)
    head = nn.Linear(4, 10)
    features = torch.randn(2, 4)
    weights = torch.randn(2, classes.shape[-1])
    dense_logits = hf_dis.subset_logits(features, head, classes)
    (dense_logits * weights).sum().backward()
    dense_grad, head.weight.grad = head.weight.grad.clone(), None
    sparse_logits = hf_dis.subset_logits(features, head, classes, sparse_grad=True)
    (sparse_logits * weights).sum().backward()
    torch.testing.assert_close(sparse_logits, dense_logits)
    grad = head.weight.grad.coalesce()
    assert grad.is_sparse and torch.equal(grad.indices()[0], torch.unique(classes))
    torch.testing.assert_close(grad.to_dense(), dense_grad)


def test_split_is_idempotent_and_leaves_the_model_as_it_was():
    model = tiny_hf("resnet").eval()  # in training mode its own forward would move the BN statistics
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    split = hf_dis.split_classifier(model)
    assert hf_dis.split_classifier(split) is split
    split.features(torch.randn(2, 3, 32, 32))
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[name], before[name]) for name in before)
    assert not model.classifier[1]._forward_pre_hooks  # the hook that read the features is gone


def test_two_headed_models_are_refused_by_name():
    config = transformers.DeiTConfig(**TINY_VIT, num_labels=NUM_CLASSES)
    with pytest.raises(ValueError, match="does not support DeiTForImageClassificationWithTeacher.*TimmWrapper"):
        hf_dis.split_classifier(transformers.DeiTForImageClassificationWithTeacher(config))
    distilled = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, num_classes=NUM_CLASSES, img_size=32, depth=1
    )
    with pytest.raises(ValueError, match="VisionTransformerDistilled's is several heads"):
        hf_dis.split_classifier(distilled)


def test_models_without_a_linear_head_are_refused():
    with pytest.raises(ValueError, match="not nn.Linear"):
        hf_dis.split_classifier(tiny_hf("vit", num_labels=0))
    with pytest.raises(ValueError, match="does not support Sequential"):
        hf_dis.split_classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


@pytest.mark.parametrize("family", ["timm-resnet18", "hf-vit", "hf-resnet", "timm-wrapper"])
def test_sampled_head_restricts_the_models_own_forward(family):
    model = MODELS[family]()
    keys = set(model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = full_logits(model, x)
    head = hf_dis.heads.install_sampled_head(model)
    assert set(model.state_dict()) == keys and hf_dis.heads.install_sampled_head(model) is head
    assert isinstance(head, nn.Linear) and hf_dis.split_classifier(model).head is head
    with torch.no_grad():
        torch.testing.assert_close(full_logits(model, x), full)  # unrestricted: exactly the old head
    for classes in (torch.tensor([4, 0, 7]), torch.tensor([[1, 2], [3, 4], [5, 12]])):
        with head.restricted_to(classes), torch.no_grad():
            sampled = full_logits(model, x)
        torch.testing.assert_close(sampled, full.gather(1, classes.expand(3, -1)), rtol=1e-4, atol=1e-5)
    with head.restricted_to(torch.tensor([1])), pytest.raises(RuntimeError, match="already restricted"):
        with head.restricted_to(torch.tensor([2])):
            pass


def test_timm_classifier_keeps_timms_initialisation():
    wrapped = hf_dis.timm_classifier("resnet18", NUM_CLASSES, seed=3)
    torch.manual_seed(3)
    reference = timm.create_model("resnet18", num_classes=NUM_CLASSES)
    for (name, value), expected in zip(
        wrapped.timm_model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, expected), name
    # timm zero-initialises the last BN of each residual block; the wrapper alone would set it to 1
    assert float(wrapped.timm_model.layer1[0].bn2.weight.detach().abs().sum()) == 0.0
    assert hf_dis.split_classifier(wrapped).num_classes == NUM_CLASSES


@pytest.mark.parametrize("bias", [True, False])
def test_per_example_dense_union_and_gather_paths_agree(monkeypatch, bias):
    """The three ways of computing per-example subset logits give the same values and the same gradients; only the
    all-classes GEMM need not find the batch's classes (a host-device synchronisation on an accelerator)."""
    import hf_dis.heads.split as split_module

    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 8, generator=g)
    classes = torch.randint(40, (6, 5), generator=g)
    assert torch.unique(classes).numel() <= 7 * 5 < 40  # factor 7: the union GEMM, not the all-classes one
    results = []
    for factor, unique_calls in ((0, 1), (7, 1), (10**9, 0)):  # gather rows; union GEMM; all-classes GEMM
        monkeypatch.setattr(split_module, "UNION_COST_FACTOR", factor)
        torch.manual_seed(1)
        head = nn.Linear(8, 40, bias=bias)
        inputs = features.clone().requires_grad_(True)

        def step(head=head, inputs=inputs) -> None:
            logits = hf_dis.subset_logits(inputs, head, classes)
            (logits * torch.arange(5.0)).sum().backward()
            results.append((logits.detach(), inputs.grad, head.weight.grad))

        assert host_sync_ops(step)["_unique2"] == unique_calls
    expected = head(features).gather(1, classes).detach()
    for logits, *_ in results:
        torch.testing.assert_close(logits, expected)
    for other in results[1:]:
        for first, second in zip(results[0], other, strict=True):
            torch.testing.assert_close(first, second)


def _gathered_by_indexing(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The reference: every example's rows gathered at once (`[B, K', d]`), one batched product."""
    return torch.bmm(weight[classes], features.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 7])
def test_gathered_logits_in_chunks_equal_the_whole_gather_with_repeated_classes(rows_per_chunk, monkeypatch):
    """Values, the features' gradient and the weight's (repeated classes accumulate into one row; dense, or sparse
    with one entry per row), whatever the chunking: one example per chunk, a ragged last chunk (7 = 3 + 3 + 1), one
    chunk."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(7, 8, generator=g)
    weight = torch.randn(20, 8, generator=g)
    classes = torch.randint(20, (7, 5), generator=g)
    classes[:, 1] = classes[:, 0]  # a duplicate in every example, and classes shared across examples
    upstream = torch.randn(7, 5, generator=g)
    monkeypatch.setitem(hf_dis.heads.gathered.CHUNK_BYTES, "cpu", rows_per_chunk * 5 * 8 * 4)
    assert hf_dis.heads.gathered.chunk_rows(classes, 8, torch.float32) == rows_per_chunk
    gathered = hf_dis.heads.gathered.gathered_logits
    results = []
    for compute in (_gathered_by_indexing, gathered, lambda *inputs: gathered(*inputs, sparse_grad=True)):
        inputs, rows = features.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        logits = compute(inputs, rows, classes)
        (logits * upstream).sum().backward()
        results.append([logits.detach(), inputs.grad, rows.grad])
    sparse_grad = results[-1][-1]  # one entry per distinct row, summed (autograd's copy drops the coalesced flag)
    assert sparse_grad.is_sparse and torch.equal(sparse_grad._indices()[0], torch.unique(classes))
    results[-1][-1] = sparse_grad.to_dense()
    for expected, *others in zip(*results, strict=True):
        for got in others:
            torch.testing.assert_close(got, expected)


def test_gathered_logits_under_autocast_compute_in_its_dtype_and_accumulate_the_weight_in_its_own():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 16, generator=g, requires_grad=True)
    weight = torch.randn(30, 16, generator=g, requires_grad=True)
    classes = torch.randint(30, (4, 6), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _gathered_by_indexing(features, weight, classes)
        logits = hf_dis.heads.gathered.gathered_logits(features, weight, classes)
    assert logits.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(logits, expected)
    expected.float().sum().backward()
    reference = (features.grad, weight.grad)
    features.grad = weight.grad = None
    logits.float().sum().backward()
    assert features.grad.dtype == weight.grad.dtype == torch.float32
    for got, want in zip((features.grad, weight.grad), reference, strict=True):
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)  # bf16 products, summed in different orders


def test_gathered_logits_keep_nothing_of_the_gathered_rows_for_the_backward():
    """Autograd would keep the `[B, K', d]` gathered rows of `weight[classes]` (the reference saves them, so the
    check can fail); the chunked path keeps its inputs only and gathers again in the backward."""
    features = torch.randn(4, 16, requires_grad=True)
    weight = torch.randn(30, 16, requires_grad=True)
    classes = torch.randint(30, (4, 6))
    for compute, keeps_rows in ((_gathered_by_indexing, True), (hf_dis.heads.gathered.gathered_logits, False)):
        saved = []

        def pack(tensor, saved=saved):
            saved.append(tuple(tensor.shape))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            compute(features, weight, classes).sum().backward()
        assert ((4, 6, 16) in saved) == keeps_rows, saved


def test_gathered_logits_check_their_shapes():
    with pytest.raises(ValueError, match=r"classes \[B, K'\]"):
        hf_dis.heads.gathered.gathered_logits(
            torch.randn(4, 8), torch.randn(10, 8), torch.zeros(3, 2, dtype=torch.long)
        )


@pytest.mark.parametrize("scope", ["per_example", "batch"])
def test_sampled_student_forms_no_batch_by_classes_tensor(scope):
    """With many classes, nothing the student's forward and the sampled loss save for backward has a class
    dimension, and the logits are [B, K']: the [B, C] logits and their gradient never exist. (The check can fail:
    the full head saves its [d, C] weight view and the full KD loss [B, C] probabilities.)"""
    num_classes, batch_size = 5000, 4
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=num_classes)
    head = hf_dis.heads.install_sampled_head(model)
    teacher_logits = torch.randn(batch_size, num_classes)
    sampler = hf_dis.build_sampler("dis", num_classes, 8, scope=scope)
    drawn = sampler.sample(teacher_logits, torch.tensor([1, 2, 3, 4]), generator=torch.Generator().manual_seed(0))
    saved_shapes = []

    def pack(tensor):
        saved_shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), head.restricted_to(drawn.classes):
        logits = model(torch.randn(batch_size, 3, 32, 32))
        loss = hf_dis.sampled_distillation_loss(logits, teacher_logits, drawn, None, 2.0, 0.0).loss
    loss.backward()
    assert logits.shape == (batch_size, drawn.classes.shape[-1])
    assert saved_shapes  # the hook saw the forward
    assert not [shape for shape in saved_shapes if num_classes in shape]
    assert head.weight.grad.shape == (num_classes, head.in_features)  # the gradient reached the classifier


class _Float32Outputs(TorchDispatchMode):
    """Records the shapes of the float32 tensors the operators run inside it return."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_leaves(out) if torch.is_tensor(t) and t.dtype == torch.float32]
        return out


@pytest.mark.parametrize("scope", ["per_example", "batch"])
def test_a_dis_step_on_bf16_teacher_logits_makes_no_float32_copy_of_them(scope, monkeypatch):
    """bf16 teacher logits (a teacher under bf16 autocast) go through DIS's draw, the sampled loss, the logged
    statistics and the backward without a float32 tensor of C columns beyond the statistics' first rows (4 here).
    (The check can fail: the statistics used to read all the batch's logits in float32.)"""
    monkeypatch.setattr(hf_dis.diagnostics, "STATS_MAX_ENTRIES", 4 * 5000)
    batch_size, num_classes = 16, 5000
    generator = torch.Generator().manual_seed(0)
    teacher_logits = (4 * torch.randn(batch_size, num_classes, generator=generator)).bfloat16()
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    head = nn.Linear(8, num_classes)
    features = torch.randn(batch_size, 8, generator=generator, requires_grad=True)
    sampler = hf_dis.build_sampler("dis", num_classes, 10, scope=scope)
    with _Float32Outputs() as recorder:
        drawn = sampler.sample(teacher_logits, labels, generator=generator)
        student = hf_dis.subset_logits(features, head, drawn.classes)
        parts = hf_dis.sampled_distillation_loss(student, teacher_logits, drawn, labels, 2.0, 0.1)
        stats = sampled_set_stats(teacher_logits, drawn, 2.0)
        parts.loss.backward()
    wide = [shape for shape in recorder.shapes if shape[-1:] == (num_classes,) and math.prod(shape) > num_classes]
    assert wide and max(math.prod(shape) for shape in wide) == 4 * num_classes  # the statistics' 4 rows
    assert torch.isfinite(parts.loss) and 0 < float(stats["teacher_mass"]) <= 1


@pytest.mark.parametrize("num_classes", [100, 5000])
@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("sampler_name", ["uniform", "topk", "ftis", "dis"])
def test_sampled_step_makes_the_host_wait_only_to_find_a_large_union(sampler_name, scope, num_classes, monkeypatch):
    """Drawing S, the head on S, the sampled loss (cross-entropy included) and its backward run no operator that would
    make the host wait for an accelerator (value checks off, as on accelerators by default), except finding the union
    of a per-example S over many classes. With the value checks on, the same step has such operators."""
    monkeypatch.setenv("HF_DIS_CHECK_VALUES", "0")
    batch_size, num_sampled = 16, 10
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(8, num_classes)
    features = torch.randn(batch_size, 8, generator=generator, requires_grad=True)
    teacher_logits = torch.randn(batch_size, num_classes, generator=generator)
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    options = {"proposal_temperature": 2.0} if sampler_name in ("ftis", "topk") else {}
    sampler = hf_dis.build_sampler(sampler_name, num_classes, num_sampled, scope=scope, **options)

    def step() -> None:
        drawn = sampler.sample(teacher_logits, labels, generator=generator)
        assert drawn.classes.shape[-1] < num_classes  # a real sampled set in both scopes
        student = hf_dis.subset_logits(features, head, drawn.classes)
        hf_dis.sampled_distillation_loss(student, teacher_logits, drawn, labels, 2.0, 0.5).loss.backward()

    union = scope == "per_example" and num_classes > hf_dis.heads.split.UNION_COST_FACTOR * (num_sampled + 2)
    expected = {"_unique2": 1} if union else {}
    assert dict(host_sync_ops(step)) == expected
    monkeypatch.setenv("HF_DIS_CHECK_VALUES", "1")
    assert sum(host_sync_ops(step).values()) > len(expected)


@pytest.mark.parametrize("num_classes", [100, 5000])
@pytest.mark.parametrize("scope", ["per_example", "batch"])
@pytest.mark.parametrize("sampler_name", ["uniform", "ftis", "dis"])
def test_a_sampled_step_adds_few_operators_to_the_full_step(sampler_name, scope, num_classes, monkeypatch):
    """On a GPU each operator is a kernel launch, and a small model's step is bound by the host's launches: drawing S,
    the head on S and the sampled loss with its backward dispatch at most 70 operators more than the full head and
    loss (40 to 61 with torch 2.14; the sampled set's statistics computed on every step would add 34)."""
    monkeypatch.setenv("HF_DIS_CHECK_VALUES", "0")
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(8, num_classes)
    features = torch.randn(16, 8, generator=generator, requires_grad=True)
    teacher_logits = torch.randn(16, num_classes, generator=generator)
    labels = torch.randint(num_classes, (16,), generator=generator)
    options = {"proposal_temperature": 2.0} if sampler_name == "ftis" else {}
    sampler = hf_dis.build_sampler(sampler_name, num_classes, 10, scope=scope, **options)

    def full_step() -> None:
        hf_dis.distillation_loss(head(features), teacher_logits, labels, 2.0, 0.5).loss.backward()

    def sampled_step() -> None:
        drawn = sampler.sample(teacher_logits, labels, generator=generator)
        student = hf_dis.subset_logits(features, head, drawn.classes)
        hf_dis.sampled_distillation_loss(student, teacher_logits, drawn, labels, 2.0, 0.5).loss.backward()

    counts = []
    for step in (full_step, sampled_step):
        step()  # first calls may set things up
        with OperatorCounter() as counter:
            step()
        counts.append(counter.total)
    assert 0 < counts[1] - counts[0] <= 70


# --- row-sparse optimizers ---------------------------------------------------------------------------------------

ROW_SPARSE = {
    "sgd": (hf_dis.heads.RowSparseSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": (
        hf_dis.heads.RowSparseSGD,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
    ),
    "adamw": (hf_dis.heads.RowSparseAdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
}


def _head_params(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(6, 3, generator=generator).requires_grad_(),
        torch.randn(6, generator=generator).requires_grad_(),
    ]


def _grads(step: int):
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(6, 3, generator=generator), torch.randn(6, generator=generator)


@pytest.mark.parametrize("name", sorted(ROW_SPARSE))
def test_row_sparse_optimizer_with_every_row_is_the_dense_one(name):
    sparse_type, dense_type, options = ROW_SPARSE[name]
    sparse_params, dense_params = _head_params(), _head_params()
    sparse, dense = sparse_type(sparse_params, **options), dense_type(dense_params, **options)
    for step in range(4):
        for params in (sparse_params, dense_params):
            params[0].grad, params[1].grad = (g.clone() for g in _grads(step))
        sparse.step()
        dense.step()
    for mine, reference in zip(sparse_params, dense_params, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)  # float32 rounding order


def _sparse_rows(grad: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """`grad` at `rows` as an uncoalesced sparse tensor (the first row's value split in two entries, as a row drawn
    twice gives it)."""
    values = grad[rows]
    values = torch.cat([values[:1] / 2, values[:1] / 2, values[1:]])
    return torch.sparse_coo_tensor(torch.tensor([[rows[0], *rows]]), values, grad.shape, check_invariants=False)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("name", sorted(ROW_SPARSE))
def test_row_sparse_optimizer_updates_touched_rows_as_if_skipped_steps_never_happened(name, layout):
    """Rows {0, 2} are touched at steps 0-3, rows {1, 4} at steps 0 and 2, rows {3, 5} never. Each touched row ends
    where the dense optimizer puts it when run on that row's steps only; untouched rows do not move at all. Dense:
    the rows are given; sparse: a sparse weight gradient over those rows says them."""
    sparse_type, dense_type, options = ROW_SPARSE[name]
    params = _head_params()
    initial = [p.detach().clone() for p in params]
    optimizer = sparse_type(params, **options)
    schedule = {0: [0, 1, 2, 4], 1: [0, 2], 2: [0, 1, 2, 4], 3: [0, 2]}
    for step, rows in schedule.items():
        params[0].grad, params[1].grad = _grads(step)
        if layout == "sparse":
            params[0].grad = _sparse_rows(params[0].grad, rows)
            optimizer.step()
        else:
            optimizer.step(torch.tensor(rows))
    for rows, steps in (([0, 2], [0, 1, 2, 3]), ([1, 4], [0, 2])):
        reference = [p[rows].clone().requires_grad_() for p in initial]
        dense = dense_type(reference, **options)
        for step in steps:
            weight_grad, bias_grad = _grads(step)
            reference[0].grad, reference[1].grad = weight_grad[rows], bias_grad[rows]
            dense.step()
        for mine, expected in zip(params, reference, strict=True):
            torch.testing.assert_close(mine[rows], expected, rtol=1e-5, atol=1e-6)
    for mine, start in zip(params, initial, strict=True):
        assert torch.equal(mine[[3, 5]], start[[3, 5]])


@pytest.mark.parametrize("name", sorted(ROW_SPARSE))
def test_row_sparse_step_on_a_sparse_gradient_waits_for_the_device_only_to_order_its_rows(name):
    """Ordering a sparse gradient's rows has a data-dependent outcome (a host-device synchronisation on an
    accelerator): one check that they are distinct and sorted, and a sort only where they are not. Nothing else in
    the step needs the host to wait: its rows are that gradient's own."""
    sparse_type, _, options = ROW_SPARSE[name]
    params = _head_params()
    optimizer = sparse_type(params, **options)
    params[0].grad = _sparse_rows(_grads(0)[0], [1, 4])  # row 1 twice
    params[1].grad = _grads(0)[1]
    assert dict(host_sync_ops(optimizer.step)) == {"_local_scalar_dense": 1, "_coalesce": 1}
    ordered = _grads(1)[0][[1, 4]]  # distinct rows in order, not flagged as coalesced (as after gradient clipping)
    params[0].grad = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), ordered, (6, 3), check_invariants=False)
    assert dict(host_sync_ops(optimizer.step)) == {"_local_scalar_dense": 1}


def test_coalesced_skips_the_sort_only_for_distinct_ordered_rows():
    from hf_dis.heads.row_sparse import coalesced

    values = torch.arange(12.0).view(4, 3)
    for rows, sorted_distinct in (([0, 2, 3, 5], True), ([2, 0, 3, 5], False), ([0, 2, 2, 5], False)):
        grad = torch.sparse_coo_tensor(torch.tensor([rows]), values, (6, 3), check_invariants=False)
        assert not grad.is_coalesced()
        result = coalesced(grad)
        assert result.is_coalesced()
        torch.testing.assert_close(result.to_dense(), grad.coalesce().to_dense(), rtol=0, atol=0)
        assert (result.values().data_ptr() == values.data_ptr()) == sorted_distinct  # no copy when no sort


def test_row_wise_second_moment_is_adamw_when_each_rows_entries_share_a_magnitude():
    """One second moment per row (the mean of the row's squared gradient) equals AdamW's per-entry ones exactly when
    every entry of a row has the same magnitude, and differs otherwise; its state is one value per row."""

    def run(row_wise: bool, grads: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        weight = _head_params()[0]
        optimizer = (
            hf_dis.heads.RowSparseAdamW([weight], lr=0.01, weight_decay=0.1, row_wise_second_moment=True)
            if row_wise
            else torch.optim.AdamW([weight], lr=0.01, weight_decay=0.1)
        )
        for grad in grads:
            weight.grad = grad.clone()
            optimizer.step()
        return weight.detach(), optimizer.state[weight]

    generator = torch.Generator().manual_seed(0)
    signs = [torch.randint(2, (6, 3), generator=generator) * 2.0 - 1 for _ in range(4)]
    scales = [torch.rand(6, 1, generator=generator) + 0.1 for _ in range(4)]
    shared = [sign * scale for sign, scale in zip(signs, scales, strict=True)]  # |g| constant within each row
    row_wise, state = run(True, shared)
    torch.testing.assert_close(row_wise, run(False, shared)[0], rtol=1e-5, atol=1e-6)
    assert state["exp_avg_sq"].shape == (6,) and state["exp_avg"].shape == (6, 3)
    varied = [torch.randn(6, 3, generator=generator) for _ in range(4)]
    assert not torch.allclose(run(True, varied)[0], run(False, varied)[0], rtol=1e-4, atol=1e-5)


def test_row_sparse_optimizer_checks():
    weight = torch.zeros(6, 3, requires_grad=True)
    weight.grad = _sparse_rows(torch.ones(6, 3), [1, 4])
    with pytest.raises(ValueError, match="rows outside the rows to update"):
        hf_dis.heads.RowSparseSGD([weight], lr=0.1).step(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="share their first"):
        hf_dis.heads.RowSparseAdamW([torch.zeros(4, 2, requires_grad=True), torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="Nesterov momentum needs"):
        hf_dis.heads.RowSparseSGD([torch.zeros(4, requires_grad=True)], lr=0.1, nesterov=True)


# --- weight imprinting --------------------------------------------------------------------------------------------


def _class_features(num_classes: int = 6, per_class: int = 4, dim: int = 5, seed: int = 0):
    """Features around one random centre per class, labels in class order; class 5 gets no example."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 3
    labels = torch.arange(num_classes - 1).repeat_interleave(per_class)
    features = centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=generator) + 4  # off-centre, as ReLU
    return features, labels


def test_imprinted_rows_are_the_scaled_centred_class_means_and_leave_empty_classes_alone():
    from hf_dis.heads.imprint import ClassFeatureSums, set_imprinted_rows

    features, labels = _class_features()
    stats = ClassFeatureSums.zeros(6, 5)
    for start in range(0, len(labels), 7):  # added batch by batch
        stats.add(features[start:start + 7], labels[start:start + 7])
    head = nn.Linear(5, 6)
    untouched = head.weight[5].detach().clone(), head.bias[5].detach().clone()
    set_imprinted_rows(head, stats, scale=3.0)
    center = features.mean(0)
    for c in range(5):
        direction = features[labels == c].mean(0) - center
        direction = direction / direction.norm()
        torch.testing.assert_close(head.weight[c], 3.0 * direction)
        torch.testing.assert_close(head.bias[c], -3.0 * direction @ center)
    torch.testing.assert_close(head.weight[5], untouched[0])
    torch.testing.assert_close(head.bias[5], untouched[1])
    # logits rank the classes by the cosine of the centred feature to each centred class mean
    query = features[:3] + 0.1
    cosine = nn.functional.normalize(query - center, dim=1) @ nn.functional.normalize(head.weight[:5].detach(), dim=1).T
    assert torch.equal(head(query)[:, :5].argmax(1), cosine.argmax(1))
    with pytest.raises(ValueError, match="must have a bias"):
        set_imprinted_rows(nn.Linear(5, 6, bias=False), stats, 1.0)
    with pytest.raises(ValueError, match=r"the class sums are \(6, 5\), the classifier \(7, 5\)"):
        set_imprinted_rows(nn.Linear(5, 7), stats, 1.0)


def test_leave_one_out_scores_each_example_against_its_class_mean_without_it():
    from hf_dis.heads.imprint import ClassFeatureSums, imprinted_directions, leave_one_out_logits

    features, labels = _class_features()
    features, labels = torch.cat([features, torch.randn(1, 5)]), torch.cat([labels, torch.tensor([5])])  # alone
    stats = ClassFeatureSums.zeros(7, 5)
    stats.add(features, labels)
    directions, center = imprinted_directions(stats)
    logits, targets = leave_one_out_logits(features, labels, stats, directions, center)
    assert logits.shape == (len(labels) - 1, 6) and torch.equal(targets, labels[:-1])  # class 6: no example, dropped
    for i in (0, 9, 19):
        others = features[(labels == labels[i]) & (torch.arange(len(labels)) != i)].mean(0)
        own = nn.functional.normalize(others - center, dim=0) @ (features[i] - center)
        torch.testing.assert_close(logits[i, labels[i]], own)
        other = (labels[i] + 1) % 6
        torch.testing.assert_close(logits[i, other], directions[other] @ (features[i] - center))


def test_the_fitted_scale_minimises_the_cross_entropy():
    from hf_dis.heads.imprint import (
        ClassFeatureSums,
        fit_imprint,
        fit_scale,
        imprinted_directions,
        leave_one_out_logits,
    )

    generator = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(200, 30, generator=generator), torch.randint(0, 30, (200,), generator=generator)
    logits[torch.arange(200), targets] += 1.0
    scale = fit_scale(logits, targets)

    def loss(s: float) -> float:
        return float(nn.functional.cross_entropy(s * logits, targets))

    assert loss(scale) <= min(loss(scale * 0.97), loss(scale * 1.03))
    features, labels = _class_features()
    stats = ClassFeatureSums.zeros(6, 5)
    stats.add(features, labels)
    fit = fit_imprint(stats, features, labels)
    assert fit.examples == len(labels) and fit.top1 >= 0.9  # well-separated classes, one example per class left out
    directions, center = imprinted_directions(stats)
    assert fit.scale == fit_scale(*leave_one_out_logits(features, labels, stats, directions, center))
    with pytest.raises(ValueError, match="no example was added"):
        fit_imprint(ClassFeatureSums.zeros(6, 5), features, labels)
