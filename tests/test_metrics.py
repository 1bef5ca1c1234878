"""Re-ID and top-k metrics: hand-computed cases, a per-query loop reference, and the evaluate modules offline."""

import numpy as np
import pytest
import torch

import hf_dis.metrics as metrics
from hf_dis.metrics import reid_metrics, reid_metrics_from_features, topk_accuracy


def reference_market1501(distmat, q_pids, g_pids, q_camids, g_camids):
    """The established per-query loop (as torchreid's eval_market1501, with fast-reid's mINP), in float64, with a
    stable sort so that ties rank like the vectorised version."""
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        raw_cmc = (g_pids[order] == q_pids[q])[~remove].astype(np.float64)
        if not raw_cmc.any():
            continue
        cmc = raw_cmc.cumsum()
        last = np.where(raw_cmc == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:10])
        precision = raw_cmc.cumsum() / np.arange(1, len(raw_cmc) + 1)
        all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
    cmc = np.asarray(all_cmc).mean(0)
    return {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": np.mean(all_ap), "mINP": np.mean(all_inp)}


def test_hand_computed_case():
    # One query (pid 1, camera 0). Gallery ranked by distance: [pid 1 cam 0 (same camera: removed), pid 2, pid 1 cam 1,
    # pid 0 (distractor), pid 1 cam 2]. After removal the ranking is [2, 1, 0, 1]: true matches at ranks 2 and 4.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    result = reid_metrics(distmat, [1], [1, 2, 1, 0, 1], [0], [0, 1, 1, 3, 2])
    assert result["rank1"] == 0.0 and result["rank5"] == 1.0
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result["mINP"] == pytest.approx(2 / 4)
    assert (result["num_valid_queries"], result["num_skipped_queries"]) == (1, 0)


def test_query_without_a_valid_match_is_skipped_and_counted():
    distmat = np.array([[0.1, 0.2], [0.2, 0.1]])
    # query 0 (pid 5, cam 0) only matches itself from the same camera; query 1 (pid 6) matches at rank 1.
    result = reid_metrics(distmat, [5, 6], [5, 6], [0, 0], [0, 1])
    assert (result["num_valid_queries"], result["num_skipped_queries"]) == (1, 1)
    assert result["rank1"] == 1.0 and result["mAP"] == 1.0 and result["mINP"] == 1.0
    with pytest.raises(ValueError, match="no query has a true match"):
        reid_metrics(distmat[:1], [5], [5, 6], [0], [0, 1])


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_loop_reference_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 37, 211
    distmat = rng.random((num_query, num_gallery))
    q_pids, g_pids = rng.integers(1, 12, num_query), rng.integers(0, 12, num_gallery)  # 0: distractors
    q_camids, g_camids = rng.integers(0, 6, num_query), rng.integers(0, 6, num_gallery)
    expected = reference_market1501(distmat, q_pids, g_pids, q_camids, g_camids)
    for chunk_size in (5, 1024):  # chunking does not change the result
        result = reid_metrics(distmat, q_pids, g_pids, q_camids, g_camids, chunk_size=chunk_size)
        for name, value in expected.items():
            assert result[name] == pytest.approx(value, abs=1e-9), name


def test_features_path_ranks_like_the_distance_matrix():
    g = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(20, 8, generator=g), torch.randn(90, 8, generator=g)
    q_pids, g_pids = torch.randint(1, 6, (20,), generator=g), torch.randint(0, 6, (90,), generator=g)
    q_camids, g_camids = torch.randint(0, 3, (20,), generator=g), torch.randint(0, 3, (90,), generator=g)
    for metric, distmat in (
        ("euclidean", torch.cdist(query.double(), gallery.double())),
        ("cosine", 1 - torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T),
    ):
        expected = reid_metrics(distmat, q_pids, g_pids, q_camids, g_camids)
        result = reid_metrics_from_features(
            query, gallery, q_pids, g_pids, q_camids, g_camids, metric=metric, chunk_size=7
        )
        for name in ("rank1", "rank5", "rank10", "mAP", "mINP"):
            assert result[name] == pytest.approx(expected[name], abs=1e-9), (metric, name)


def test_reid_input_errors():
    with pytest.raises(ValueError, match="3 queries but q_pids"):
        reid_metrics(np.zeros((3, 4)), [1, 2], [1, 2, 3, 4], [0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="4 gallery items but g_pids"):
        reid_metrics(np.zeros((1, 4)), [1], [1, 2, 3], [0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="at least one query"):
        reid_metrics(np.zeros((0, 4)), [], [1, 2, 3, 4], [], [0, 0, 0, 0])


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    # labels 1, 2, 0: top-1 hits row 0 only; top-2 also row 1 (its second score); row 0's label 0 is last in row 2
    assert topk_accuracy(logits, torch.tensor([1, 2, 0]), ks=(1, 2)) == pytest.approx({"top1": 1 / 3, "top2": 2 / 3})
    assert topk_accuracy(logits, torch.tensor([1, 0, 2]))["top5"] == 1.0  # k larger than C: everything is in the top


def test_topk_accuracy_breaks_exact_ties_as_argmax():
    # row 0: classes 1 and 3 tie at the top; row 1: classes 0, 2 and 3 tie in second place behind class 1
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0], [1.0, 3.0, 1.0, 1.0]])
    assert logits.argmax(1).tolist() == [1, 1]  # the lowest id of the tied maxima
    for labels, top1 in (([1, 1], 1.0), ([3, 1], 0.5)):
        assert topk_accuracy(logits, torch.tensor(labels), ks=(1,))["top1"] == top1
    # second place in row 1 goes to class 0, the lowest of the tied ids; class 2 is third and class 3 fourth
    assert [topk_accuracy(logits[1:], torch.tensor([label]), ks=(2, 3))
            for label in (0, 2, 3)] == [{"top2": 1.0, "top3": 1.0}, {"top2": 0.0, "top3": 1.0},
                                         {"top2": 0.0, "top3": 0.0}]  # fmt: skip
    # over several 1,024-row chunks, with ties everywhere (scores from 4 values): top-1 is argmax's accuracy
    generator = torch.Generator().manual_seed(0)
    logits, labels = (
        torch.randint(4, (3000, 10), generator=generator).float(),
        torch.randint(10, (3000,), generator=generator),
    )
    expected = float((logits.argmax(1) == labels).double().mean())
    assert topk_accuracy(logits, labels, ks=(1, 10)) == {"top1": expected, "top10": 1.0}


def test_evaluate_modules_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # evaluate copies modules into its cache
    assert metrics.available() == ["reid", "topk_accuracy"]
    rng = np.random.default_rng(0)
    distmat = rng.random((9, 30))
    q_pids, g_pids = rng.integers(1, 5, 9), rng.integers(0, 5, 30)
    q_camids, g_camids = rng.integers(0, 3, 9), rng.integers(0, 3, 30)
    reid = metrics.load("reid")
    for row in range(0, 9, 4):  # rows added in batches, as during evaluation
        reid.add_batch(distances=distmat[row : row + 4].tolist(), query_pids=q_pids[row : row + 4],
                       query_camids=q_camids[row : row + 4])  # fmt: skip
    result = reid.compute(gallery_pids=g_pids.tolist(), gallery_camids=g_camids.tolist())
    expected = reid_metrics(distmat, q_pids, g_pids, q_camids, g_camids)
    assert result == pytest.approx(expected)
    accuracy = metrics.load("topk_accuracy").compute(predictions=[[0.1, 0.9], [0.7, 0.3]], references=[1, 1])
    assert accuracy == {"top1": 0.5, "top5": 1.0}
    with pytest.raises(ValueError, match="Unknown metric 'bleu'"):
        metrics.load("bleu")


def test_classification_metrics_for_the_trainer():
    from transformers import EvalPrediction

    prediction = EvalPrediction(predictions=np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15]]), label_ids=np.array([1, 2]))
    assert metrics.classification_metrics(prediction) == {"accuracy": 0.5, "top5": 1.0}


def test_classification_metrics_read_ranked_class_ids_as_they_read_logits():
    from transformers import EvalPrediction

    logits = torch.randn(50, 30, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(30, (50,), generator=torch.Generator().manual_seed(1))
    ranked = logits.topk(5, dim=1).indices  # what a sharded classifier predicts
    expected = metrics.classification_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    assert metrics.classification_metrics(EvalPrediction(predictions=ranked.numpy(), label_ids=labels.numpy())) == (
        expected
    )
    assert 0 < expected["accuracy"] < expected["top5"] < 1  # both metrics are exercised
    with pytest.raises(ValueError, match=r"ranked classes must be \[N, k\]"):
        metrics.classification_metrics(EvalPrediction(predictions=ranked[0].numpy(), label_ids=labels.numpy()))


def test_ranked_classes_rank_as_topk_accuracy_does_ties_included():
    from transformers import EvalPrediction

    from hf_dis.metrics.accuracy import ranked_classes

    # ties everywhere (scores from 3 values), across the top-5 boundary and inside it
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(3, (400, 12), generator=generator).float()
    labels = torch.randint(12, (400,), generator=generator)
    ranked = ranked_classes(logits)
    assert ranked.shape == (400, 5)
    # the same rank as topk_accuracy's exact rule: a label is at position r of its row's ranking iff its rank is r
    rank = metrics.accuracy.label_rank(logits, labels)
    hits = ranked == labels[:, None]
    for r in range(5):
        assert torch.equal(hits[:, r], rank == r)
    from_ids = metrics.classification_metrics(EvalPrediction(predictions=ranked.numpy(), label_ids=labels.numpy()))
    from_logits = metrics.classification_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    assert from_ids == from_logits and 0 < from_ids["accuracy"] < from_ids["top5"] < 1
    assert ranked_classes(torch.tensor([[0.0, 1.0, 1.0]])).tolist() == [[1, 2, 0]]  # k above C: every class, ranked
    assert metrics.top_classes_for_metrics((logits[:2], logits[:2]), None).shape == (2, 5)  # outputs with extras
