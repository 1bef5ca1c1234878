"""Re-ID: the triplet loss, label smoothing on a sampled set, the P x K sampler (alone and sharded as Accelerate
shards it), the BoT model, and the two re-ID trainers end to end on a tiny synthetic identity task."""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.data_loader import BatchSamplerShard
from tiny_models import identity_split
from transformers import AutoModelForImageClassification, EvalPrediction

import hf_dis
from hf_dis.data import IdentitySampler, padded_crop_transform, reid_eval_batches, reid_eval_dataset
from hf_dis.heads import split_classifier
from hf_dis.losses import batch_hard_triplet_loss, similarity_preserving_loss
from hf_dis.metrics import reid_eval_metrics, reid_metrics_from_features
from hf_dis.models import ReIDConfig, ReIDModel

ROOT = Path(__file__).resolve().parents[1]

# --- losses ------------------------------------------------------------------------------------------------------


def _naive_batch_hard(features, labels, margin):
    losses = []
    for a in range(len(labels)):
        d = [float(torch.dist(features[a].double(), features[j].double())) for j in range(len(labels))]
        pos = [d[j] for j in range(len(labels)) if labels[j] == labels[a] and j != a]
        neg = [d[j] for j in range(len(labels)) if labels[j] != labels[a]]
        if pos and neg:
            gap = max(pos) - min(neg)
            losses.append(np.log1p(np.exp(gap)) if margin is None else max(0.0, gap + margin))
    return float(np.mean(losses))


@pytest.mark.parametrize("margin", [0.3, 1.0, None])
def test_batch_hard_triplet_matches_a_loop(margin):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 5, generator=generator)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])  # identity 4 has no positive: not an anchor
    loss = batch_hard_triplet_loss(features, labels, margin)
    assert loss.item() == pytest.approx(_naive_batch_hard(features, labels, margin), rel=1e-5)


def test_batch_hard_triplet_degenerate_batches_and_errors():
    features = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(features, torch.tensor([0, 1, 2]))  # no anchor has a positive
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None and torch.all(features.grad == 0)
    with pytest.raises(ValueError, match="margin must be > 0"):
        batch_hard_triplet_loss(features, torch.tensor([0, 0, 1]), margin=0.0)
    with pytest.raises(ValueError, match=r"features must be \[B, d\]"):
        batch_hard_triplet_loss(features, torch.tensor([0, 0]))


def _naive_similarity_preserving(student, teacher):
    """Tung & Mori's loss written out in float64: each row of each Gram matrix scaled to unit norm, then the mean
    squared entry of the difference over the B x B pairs."""
    batch = student.shape[0]
    total = 0.0
    grams = []
    for embeddings in (student.detach().double(), teacher.detach().double()):
        gram = [[float(embeddings[i] @ embeddings[j]) for j in range(batch)] for i in range(batch)]
        grams.append([[value / np.sqrt(sum(v * v for v in row)) for value in row] for row in gram])
    for i in range(batch):
        for j in range(batch):
            total += (grams[0][i][j] - grams[1][i][j]) ** 2
    return total / batch**2


def test_similarity_preserving_loss_matches_its_definition_and_its_gradient():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=generator, requires_grad=True)  # another width than the teacher's
    teacher = torch.randn(6, 9, generator=generator, requires_grad=True)
    loss = similarity_preserving_loss(student, teacher)
    assert loss.item() == pytest.approx(_naive_similarity_preserving(student, teacher), rel=1e-5)
    loss.backward()
    assert teacher.grad is None  # the teacher is a constant target
    reference = student.detach().double().requires_grad_(True)
    gram = lambda e: F.normalize(e @ e.T, dim=1)  # noqa: E731
    ((gram(reference) - gram(teacher.detach().double())).pow(2).sum() / 36).backward()
    torch.testing.assert_close(student.grad, reference.grad.float(), rtol=1e-4, atol=1e-6)
    # invariant to the embeddings' scale, zero when the similarity structure is the teacher's
    assert similarity_preserving_loss(3.0 * teacher.detach(), teacher).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="same 6 images"):
        similarity_preserving_loss(student, teacher[:4])
    with pytest.raises(ValueError, match=r"must be \[batch, width\]"):
        similarity_preserving_loss(student[0], teacher)


@pytest.mark.parametrize("log_q_correction", [True, False])
def test_sampled_label_smoothing_is_exact_when_S_is_every_class(log_q_correction):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 7, generator=generator)
    labels = torch.tensor([0, 3, 6, 2])
    classes = torch.arange(7)
    loss = hf_dis.sampled_cross_entropy(
        logits, classes, labels, torch.zeros(7), log_q_correction=log_q_correction, label_smoothing=0.2
    )
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.2).item(), rel=1e-6)
    # Duplicates masked out change nothing.
    dup = torch.cat([classes, classes[:3]])
    mask = torch.cat([torch.zeros(7, dtype=torch.bool), torch.ones(3, dtype=torch.bool)])
    with_dups = hf_dis.sampled_cross_entropy(
        logits[:, dup], dup, labels, torch.zeros(10), mask, log_q_correction=log_q_correction, label_smoothing=0.2
    )
    assert with_dups.item() == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        hf_dis.sampled_cross_entropy(logits, classes, labels, torch.zeros(7), label_smoothing=1.0)


def test_sampled_label_smoothing_weights_classes_by_inverse_inclusion():
    # S = {label 0 (pi = 1), class 1 (pi = 1/4), class 2 (pi = 1/2)}; without the log-Q correction the smoothing
    # term is the 1/pi-weighted mean of -log q over S.
    logits = torch.tensor([[1.0, 0.5, -0.5]])
    log_pi = torch.log(torch.tensor([1.0, 0.25, 0.5]))
    loss = hf_dis.sampled_cross_entropy(
        logits, torch.tensor([0, 1, 2]), torch.tensor([0]), log_pi, log_q_correction=False, label_smoothing=0.1
    )
    log_q = F.log_softmax(logits[0], -1)
    uniform = -(torch.tensor([1.0, 4.0, 2.0]) * log_q).sum() / 7
    assert loss.item() == pytest.approx((0.9 * -log_q[0] + 0.1 * uniform).item(), rel=1e-6)


# --- the P x K sampler -------------------------------------------------------------------------------------------


def _labels(num_ids=10, per_id=(3, 9), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[i] * rng.integers(*per_id) for i in range(num_ids)])
    return rng.permutation(labels)


def test_identity_sampler_yields_p_identities_times_k_images():
    labels = _labels()
    sampler = IdentitySampler(labels, instances_per_identity=3, identities_per_batch=4, seed=5)
    indices = list(sampler)
    assert len(indices) == len(sampler) == sampler.num_steps * 12
    assert sampler.num_steps == len(labels) // 12
    for start in range(0, len(indices), 12):
        block = labels[indices[start : start + 12]]
        ids, counts = np.unique(block, return_counts=True)
        assert len(ids) == 4 and np.all(counts == 3)
    assert list(sampler) == indices  # (seed, epoch) fixes the order
    sampler.set_epoch(1)
    assert list(sampler) != indices
    assert list(IdentitySampler(labels, 3, 4, seed=6)) != indices


def test_identity_sampler_repeats_images_of_small_identities_and_warns(caplog):
    labels = np.array([0, 0, 0, 0, 1, 2, 2])  # identity 1 has one image, identity 2 two
    with caplog.at_level(logging.WARNING, logger="hf_dis.data.identity_sampler"):
        sampler = IdentitySampler(labels, instances_per_identity=4, identities_per_batch=3)
    assert "2 of 3 identities have fewer than 4 images" in caplog.text
    indices = list(sampler)
    assert sorted(labels[indices]) == [0] * 4 + [1] * 4 + [2] * 4
    assert indices.count(4) == 4  # identity 1's only image, four times
    # every image of identity 0 is used once before any repeats
    assert sorted(i for i in indices if labels[i] == 0) == [0, 1, 2, 3]


def test_identity_sampler_errors():
    with pytest.raises(ValueError, match="needs 8 distinct identities"):
        IdentitySampler([0, 1, 2, 3] * 5, instances_per_identity=2, identities_per_batch=4, num_replicas=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        IdentitySampler([0, 1], instances_per_identity=0, identities_per_batch=1)


def test_identity_sampler_sharded_as_accelerate_does():
    """Two processes, each with batches of P x K taken round-robin by Accelerate's BatchSamplerShard: each gets P
    identities x K images, and in a step no identity (hence no image) is in both processes' batches."""
    labels = _labels(num_ids=30, per_id=(4, 12), seed=1)
    sampler = IdentitySampler(labels, instances_per_identity=4, identities_per_batch=3, num_replicas=2, seed=0)
    batches = torch.utils.data.BatchSampler(sampler, batch_size=12, drop_last=False)
    shards = [list(BatchSamplerShard(batches, num_processes=2, process_index=rank)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == sampler.num_steps
    for batch0, batch1 in zip(*shards, strict=True):
        for batch in (batch0, batch1):
            ids, counts = np.unique(labels[batch], return_counts=True)
            assert len(ids) == 3 and np.all(counts == 4)
        assert not set(labels[batch0]) & set(labels[batch1])


# --- the model ---------------------------------------------------------------------------------------------------


def test_reid_model_outputs_init_save_and_split(tmp_path):
    model = ReIDModel.from_backbone("test_resnet", 9, seed=0).eval()
    torch.manual_seed(0)
    reference = __import__("timm").create_model("test_resnet", num_classes=0)
    for name, tensor in reference.state_dict().items():  # timm's initialisation, not transformers'
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert model.classifier.bias is None and 0.0005 < model.classifier.weight.std() < 0.002
    assert not model.neck.bias.requires_grad
    pixels = torch.randn(2, 3, 32, 16)
    outputs = model(pixels)
    assert outputs.logits.shape == (2, 9) and outputs.features.shape == outputs.embeddings.shape
    assert torch.allclose(outputs.embeddings, model.neck(outputs.features))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ReIDModel) and torch.allclose(loaded(pixels).logits, outputs.logits)
    assert split_classifier(model).head_path == "classifier"


@pytest.mark.parametrize("backbone", ["test_resnet", "resnet10t"])  # a strided shortcut; an average-pool one
def test_last_stride_one_doubles_the_final_feature_map_and_is_saved(backbone, tmp_path):
    plain = ReIDModel.from_backbone(backbone, 4, seed=0).eval()
    bot = ReIDModel.from_backbone(backbone, 4, seed=0, last_stride=1).eval()
    pixels = torch.randn(2, 3, 64, 32)
    assert plain.backbone.forward_features(pixels).shape[-2:] == (2, 1)
    assert bot.backbone.forward_features(pixels).shape[-2:] == (4, 2)
    shapes = {name: tensor.shape for name, tensor in plain.state_dict().items()}
    assert shapes == {name: tensor.shape for name, tensor in bot.state_dict().items()}  # same weights fit
    bot.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.last_stride == 1 and loaded.backbone.forward_features(pixels).shape[-2:] == (4, 2)
    torch.testing.assert_close(loaded(pixels).embeddings, bot(pixels).embeddings)


def test_last_stride_needs_a_resnet_family_timm_backbone():
    with pytest.raises(ValueError, match="needs a timm ResNet-family backbone"):
        ReIDModel.from_backbone("test_convnext", 4, last_stride=1)
    with pytest.raises(ValueError, match="last_stride must be 1"):
        ReIDConfig("resnet50", last_stride=2)


def test_reid_model_on_a_transformers_backbone(tmp_path):
    import transformers

    transformers.ResNetModel(
        transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    ).save_pretrained(tmp_path / "backbone")
    model = ReIDModel.from_backbone(str(tmp_path / "backbone"), 5, pretrained=True).eval()
    assert model.config.backbone_source == "transformers" and model(torch.randn(2, 3, 32, 16)).embeddings.shape == (
        2,
        16,
    )
    model.save_pretrained(tmp_path / "reid")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "reid").eval()
    pixels = torch.randn(2, 3, 32, 16)
    assert torch.allclose(loaded(pixels).logits, model(pixels).logits)
    with pytest.raises(ValueError, match="timm backbones only"):
        ReIDModel.from_backbone(str(tmp_path / "backbone"), 5, output_stride=16)
    with pytest.raises(ValueError, match=r"\['last_stride'\] apply to timm backbones only"):
        ReIDModel.from_backbone(str(tmp_path / "backbone"), 5, last_stride=1)


# --- evaluation pieces -------------------------------------------------------------------------------------------


def test_reid_eval_metrics_splits_queries_by_mask():
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(10, 4, generator=generator)
    pids = torch.tensor([1, 2, 3, 1, 2, 3, 1, 2, 3, 0])
    camids = torch.tensor([0, 0, 1, 1, 1, 0, 2, 2, 2, 0])
    is_query = torch.tensor([1, 0, 1, 0, 1, 0, 0, 0, 0, 0]).bool()
    ids = torch.stack([pids, camids, is_query.long()], 1)
    result = reid_eval_metrics(EvalPrediction(predictions=embeddings.numpy(), label_ids=ids.numpy()))
    expected = reid_metrics_from_features(
        embeddings[is_query],
        embeddings[~is_query],
        pids[is_query],
        pids[~is_query],
        camids[is_query],
        camids[~is_query],
    )
    assert result == expected
    with pytest.raises(ValueError, match=r"label ids \[N, 3\]"):
        reid_eval_metrics(EvalPrediction(predictions=embeddings.numpy(), label_ids=pids.numpy()))


def test_reid_eval_dataset_checks_its_splits():
    split = identity_split(3, 2, start_pid=0, label=False)
    combined = reid_eval_dataset(split, split)
    assert combined["is_query"] == [True] * 6 + [False] * 6
    with pytest.raises(ValueError, match="query split is empty"):
        reid_eval_dataset(split.select([]), split)
    with pytest.raises(ValueError, match="lacks the columns"):
        reid_eval_dataset(split.remove_columns("camid"), split)


# --- the trainers, end to end ------------------------------------------------------------------------------------


def _reid_data():
    train_transform = padded_crop_transform(training=True, image_size=(32, 16), padding=2, random_erasing=0.5)
    eval_transform = padded_crop_transform(training=False, image_size=(32, 16))
    train = identity_split(8, 6, 0).with_transform(hf_dis.data.labelled_batches(train_transform))
    query = identity_split(5, 1, 100, label=False, seed=1)
    gallery = identity_split(5, 3, 100, label=False, seed=1)  # same colours: each query has 2 valid matches
    gallery = gallery.cast_column("camid", datasets.Value("int64")).map(lambda row: {"camid": row["camid"] + 1})
    evaluation = reid_eval_dataset(query, gallery).with_transform(reid_eval_batches(eval_transform))
    return train, evaluation


def test_reid_trainer_trains_pk_batches_and_reports_reid_metrics(tmp_path):
    train, evaluation = _reid_data()
    args = hf_dis.ReIDTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=7,
        instances_per_identity=2,
        max_steps=3,
        learning_rate=1e-3,
        label_smoothing_factor=0.1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = hf_dis.ReIDTrainer(
        model=ReIDModel.from_backbone("test_resnet", 8, seed=0), args=args, train_dataset=train, eval_dataset=evaluation
    )
    loader = trainer.get_train_dataloader()
    for batch in loader:
        ids, counts = np.unique(batch["labels"].numpy(), return_counts=True)
        assert len(ids) == 4 and np.all(counts == 2)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "ce_loss" in entry]
    assert logged and all(entry["triplet_loss"] >= 0 for entry in logged)
    assert not torch.equal(before["classifier.weight"], trainer.model.classifier.weight)
    metrics = trainer.evaluate()
    for key in ("eval_rank1", "eval_rank5", "eval_mAP", "eval_mINP"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["eval_num_valid_queries"] == 5
    # the trainer's metrics are those of the embeddings it computed
    model = trainer.model.eval()
    batch = next(iter(trainer.get_eval_dataloader()))
    with torch.no_grad():
        assert model(batch["pixel_values"]).embeddings.shape[0] == 7


def test_reid_distillation_trainer_distils_with_dis_and_triplet(tmp_path):
    train, evaluation = _reid_data()
    teacher = ReIDModel.from_backbone("test_resnet", 8, seed=1).eval()
    args = hf_dis.ReIDDistillationArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        instances_per_identity=2,
        max_steps=4,
        sampler="dis",
        num_sampled=3,
        dis_refit_every=2,
        label_smoothing_factor=0.1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = hf_dis.ReIDDistillationTrainer(
        model=ReIDModel.from_backbone("test_resnet", 8, seed=0),
        args=args,
        teacher=teacher,
        train_dataset=train,
        eval_dataset=evaluation,
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "kd_loss" in entry]
    assert len(logged) == 4 and all("triplet_loss" in entry and "ce_loss" in entry for entry in logged)
    assert any("teacher_mass" in entry for entry in logged)  # sampled steps between the DIS probes
    metrics = trainer.evaluate()
    assert metrics["eval_num_valid_queries"] == 5 and 0.0 <= metrics["eval_mAP"] <= 1.0


def _embedding_kd_args(tmp_path, **options):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, instances_per_identity=2, max_steps=3,
                    sampler="dis", num_sampled=3, dis_refit_every=2, logging_steps=1, report_to=[], use_cpu=True,
                    seed=0, embedding_kd_weight=2.0, overwrite_output_dir=True)  # fmt: skip
    return hf_dis.ReIDDistillationArguments(**{**defaults, **options})


def test_the_embedding_term_from_a_live_teacher_and_from_a_cache(tmp_path):
    """With embedding_kd_weight, the logged similarity-preserving term is what the loss gives on the batch's
    embeddings, from the live teacher or from the teacher embeddings the cache stored (the same numbers: one view of
    the un-augmented image in both here), and the term moves the student (weight 2 against 0)."""
    train, evaluation = _reid_data()
    teacher = ReIDModel.from_backbone("test_resnet", 8, seed=1).eval()
    eval_transform = padded_crop_transform(training=False, image_size=(32, 16))
    plain = identity_split(8, 6, 0)
    cached = hf_dis.data.cache_teacher_logits(teacher, plain, eval_transform, top_r=8, batch_size=16)
    with torch.no_grad():
        expected = teacher(torch.stack([eval_transform(plain[0]["image"])])).embeddings[0]
    torch.testing.assert_close(torch.tensor(cached[0]["teacher_embeddings"]), expected, rtol=1e-5, atol=1e-5)

    runs = {}
    for name, (teacher_arg, data, weight) in {
        "live": (teacher, plain.with_transform(hf_dis.data.labelled_batches(eval_transform)), 2.0),
        "cached": (None, cached.with_transform(hf_dis.data.labelled_batches(eval_transform)), 2.0),
        "off": (teacher, plain.with_transform(hf_dis.data.labelled_batches(eval_transform)), 0.0),
    }.items():
        trainer = hf_dis.ReIDDistillationTrainer(
            model=ReIDModel.from_backbone("test_resnet", 8, seed=0),
            args=_embedding_kd_args(tmp_path / name, embedding_kd_weight=weight),
            teacher=teacher_arg,
            train_dataset=data,
        )
        trainer.train()
        runs[name] = trainer
    logged = {
        name: [entry.get("embedding_kd_loss") for entry in run.state.log_history if "kd_loss" in entry]
        for name, run in runs.items()
    }
    assert all(value is not None and value >= 0 for value in logged["live"]) and len(logged["live"]) == 3
    assert logged["off"] == [None, None, None]
    assert logged["cached"] == pytest.approx(logged["live"], rel=1e-4)
    pairs = zip(runs["live"].model.parameters(), runs["off"].model.parameters(), strict=True)
    assert any(not torch.equal(with_term, without) for with_term, without in pairs)
    card = (tmp_path / "live" / "README.md").read_text()
    assert "| embedding KD weight (similarity-preserving) | 2.0 |" in card


def test_the_embedding_term_refuses_models_and_caches_without_embeddings(tmp_path):
    train, _ = _reid_data()
    teacher = ReIDModel.from_backbone("test_resnet", 8, seed=1).eval()
    student = hf_dis.timm_classifier("test_resnet", 8)  # a classifier: logits only
    trainer = hf_dis.ReIDDistillationTrainer(
        model=student, args=_embedding_kd_args(tmp_path / "a"), teacher=teacher, train_dataset=train
    )
    with pytest.raises(ValueError, match="needs the student's embeddings"):
        trainer.train()
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())  # nothing written
    eval_transform = padded_crop_transform(training=False, image_size=(32, 16))
    classifier_teacher = hf_dis.timm_classifier("test_resnet", 8)
    cache = hf_dis.data.cache_teacher_logits(classifier_teacher, identity_split(8, 6, 0), eval_transform, top_r=8)
    assert "teacher_embeddings" not in cache.column_names
    trainer = hf_dis.ReIDDistillationTrainer(
        model=ReIDModel.from_backbone("test_resnet", 8, seed=0),
        args=_embedding_kd_args(tmp_path / "b"),
        train_dataset=cache.with_transform(hf_dis.data.labelled_batches(eval_transform)),
    )
    with pytest.raises(ValueError, match="the teacher cache has no 'teacher_embeddings' column"):
        trainer.train()
    with pytest.raises(ValueError, match="embedding_kd_weight must be >= 0"):
        _embedding_kd_args(tmp_path, embedding_kd_weight=-1.0)


def test_the_embedding_term_under_two_processes(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 (2 gloo ranks on CPU): each rank computes the term on its own
    P x K batch, and DDP keeps the two replicas identical."""
    script = str(ROOT / "tests" / "scripts" / "ddp_reid_embedding.py")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        script, str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert len(ranks[0]["embedding_kd_loss"]) == 3 and all(value > 0 for value in ranks[0]["embedding_kd_loss"])
    assert ranks[0]["parameter_checksum"] == ranks[1]["parameter_checksum"]


def test_reid_arguments_and_trainer_checks(tmp_path):
    with pytest.raises(ValueError, match="must be a multiple of instances_per_identity"):
        hf_dis.ReIDTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=6, instances_per_identity=4)
    with pytest.raises(ValueError, match="triplet_margin must be > 0"):
        hf_dis.ReIDDistillationArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, triplet_margin=0)
    with pytest.raises(TypeError, match="ReIDTrainingArguments"):
        hf_dis.ReIDTrainer(model=ReIDModel.from_backbone("test_resnet", 2), args=None)
    train, _ = _reid_data()
    args = hf_dis.ReIDTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=20, instances_per_identity=2, report_to=[], use_cpu=True
    )
    trainer = hf_dis.ReIDTrainer(model=ReIDModel.from_backbone("test_resnet", 8), args=args, train_dataset=train)
    with pytest.raises(ValueError, match="needs 10 distinct identities"):
        trainer.get_train_dataloader()
