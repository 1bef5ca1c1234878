"""Does a re-ID teacher's identity classifier say anything about identities it never saw? Retrieval on the test
identities (Market-1501 protocol: query against gallery, other cameras only) ranked by the teacher's embeddings, and
ranked by its identity logits instead (the softmax over the training identities at several temperatures, and the
raw logits): what the logit KD term hands the student, read as a descriptor of an unseen identity.

    python benchmarks/reid_logit_retrieval.py --model reproduce_output/glyphs_reid_cpu_small/teacher \
        --dataset glyphs --glyph_classes 300 --output benchmarks/results/reid_logit_retrieval_cpu_small.json

Takes the data options of `hf-dis evaluate` (the teacher's task); writes one JSON with rank-1 / mAP per descriptor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from run_info import run_info
from tqdm import tqdm

from hf_dis.data import REID_EVAL_KEYS
from hf_dis.metrics import reid_metrics_from_features
from hf_dis.recipes import evaluate
from hf_dis.recipes.data import load_splits, reid_splits
from hf_dis.recipes.models import normalisation
from hf_dis.trainer import load_teacher

TEMPERATURES = (1.0, 4.0, 16.0)


@torch.no_grad()
def descriptors(model, evaluation, batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`{name: [N, .]}` descriptors of every evaluation image, and `[N, 3]` (pid, camid, is_query)."""
    embeddings, logits, ids = [], [], []
    for start in tqdm(range(0, len(evaluation), batch_size), desc="descriptors"):
        batch = evaluation[start : start + batch_size]
        outputs = model(torch.stack(list(batch["pixel_values"])))
        embeddings.append(outputs["embeddings"].float())
        logits.append(outputs["logits"].float())
        ids.append(torch.stack([torch.as_tensor(batch[key]).long() for key in REID_EVAL_KEYS], dim=1))
    logits_all = torch.cat(logits)
    found = {"embeddings (BNNeck)": torch.cat(embeddings), "identity logits": logits_all}
    for temperature in TEMPERATURES:
        found[f"identity softmax, T = {temperature:g}"] = torch.softmax(logits_all / temperature, dim=1)
    return found, torch.cat(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the JSON file to write")
    known, rest = parser.parse_known_args()
    options, data = evaluate.parse_args(rest)
    model = load_teacher(options.model, role="model", passed_as="--model").eval()
    splits = load_splits(data, "reid")
    _, evaluation = reid_splits(splits, data, normalisation(model, options.model), options.input_size(data, "reid"))
    found, ids = descriptors(model, evaluation, options.batch_size)
    is_query, pids, camids = ids[:, 2].bool(), ids[:, 0], ids[:, 1]
    results = {}
    for name, values in found.items():
        for metric in ("euclidean", "cosine"):
            scores = reid_metrics_from_features(
                values[is_query], values[~is_query], pids[is_query], pids[~is_query], camids[is_query],
                camids[~is_query], metric=metric,
            )  # fmt: skip
            results[f"{name}, {metric}"] = {key: scores[key] for key in ("rank1", "mAP")}
            print(f"{name:32s} {metric:9s} rank-1 {scores['rank1']:.4f}  mAP {scores['mAP']:.4f}")
    report = {
        "model": options.model,
        "data": {key: value for key, value in vars(data).items() if value is not None},
        "training identities": int(found["identity logits"].shape[1]),
        "queries": int(is_query.sum()),
        "gallery": int((~is_query).sum()),
        "results": results,
        "run": run_info(),
    }
    Path(known.output).write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
