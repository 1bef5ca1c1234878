"""How a classification study's students spread their predictions over the classes: for every finished run of a
`benchmarks/reproduce.py` study, its test-set accuracy, how many distinct classes it predicts, the share of the
test images given to its most-predicted classes ("hubs"), and the logit of the mean test feature (the component all
images share) for the hubs' rows against the other rows'. A sampled student, whose classifier rows are pushed
down only when their class is in a sampled set, can show hubs that take a large share of the predictions; full
softmax training spreads them over nearly every class (docs/studies/glyphs_gb2312_1000_cpu.md). JSON lines and a
Markdown table.

    python benchmarks/prediction_spread.py benchmarks/studies/glyphs_gb2312_1000_cpu.yaml --out benchmarks/results
    python benchmarks/prediction_spread.py STUDY.yaml --runs dis-0.02-0 full-None-0   # some runs only
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import torch
from reproduce import flags, load_study
from run_info import run_info, write_results

from hf_dis import load_teacher, split_classifier
from hf_dis.recipes import distill_cifar100
from hf_dis.recipes.data import classification_splits, load_splits, num_labels
from hf_dis.recipes.models import normalisation

#: The "hubs": this many most-predicted classes (at most half of the classes).
TOP_CLASSES = 20
#: What the table averages over seeds.
AVERAGED = ("accuracy", "distinct_predicted", "top_share", "hub_mean_feature_logit", "other_mean_feature_logit")


@torch.no_grad()
def spread(model: torch.nn.Module, test: torch.utils.data.Dataset, num_classes: int, batch_size: int) -> dict:
    """On `test`: accuracy, distinct predicted classes, the hubs (the most-predicted classes) and their share of
    the predictions, and the mean test feature's logit for the hubs and for the other classes."""
    split = split_classifier(model)
    features, labels, predictions = [], [], []
    for batch in torch.utils.data.DataLoader(test, batch_size=batch_size):
        features.append(split.features(batch["pixel_values"]))
        predictions.append(split.logits(features[-1]).argmax(-1))  # batch by batch, as the evaluation
        labels.append(batch["labels"])
    features, truth, predicted = torch.cat(features), torch.cat(labels), torch.cat(predictions)
    counts = Counter(predicted.tolist())
    most_predicted = counts.most_common(min(TOP_CLASSES, num_classes // 2))
    hubs = torch.tensor([label for label, _ in most_predicted])
    others = torch.ones(num_classes, dtype=torch.bool).index_fill_(0, hubs, False)
    mean_feature_logits = split.logits(features.mean(0, keepdim=True))[0]
    return {
        "accuracy": float((predicted == truth).float().mean()),
        "distinct_predicted": len(counts),
        "num_classes": num_classes,
        "hubs": len(most_predicted),
        "top_share": sum(n for _, n in most_predicted) / predicted.numel(),
        "hub_mean_feature_logit": float(mean_feature_logits[hubs].mean()),
        "other_mean_feature_logit": float(mean_feature_logits[others].mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a classification study's YAML file (its runs must have finished)")
    parser.add_argument("--runs", nargs="+", help="run keys (folder names); default every finished run")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="default: the study's per_device_eval_batch_size (else the Trainer's 8): the recipe's evaluation batches, "
        "so that the predictions are computed as the evaluation computed them",
    )
    parser.add_argument("--out", type=Path, help="default: the study's output folder")
    args = parser.parse_args(argv)
    study = load_study(args.config)
    if study.task != "classification":
        parser.error(f"{args.config} is a {study.task} study: prediction spread is for classification.")
    root = Path(study.output_dir)
    if not (root / "results.jsonl").is_file():
        parser.error(f"{root} holds no finished run: run `python benchmarks/reproduce.py {args.config}` first.")
    finished = [json.loads(line)["key"] for line in (root / "results.jsonl").read_text().splitlines()]
    keys = args.runs or finished
    batch_size = args.batch_size or int(study.training.get("per_device_eval_batch_size", 8))
    student, data, _ = distill_cifar100.parse_args(
        ["--student", study.student, "--teacher_model", "unused", "--output_dir", str(root), *flags(study.data)]
    )
    splits = load_splits(data, "classification")
    num_classes = num_labels(splits)
    rows = []
    for key in keys:
        model = load_teacher(str(root / key)).eval()
        _, test = classification_splits(
            splits, data, normalisation(model, study.student), student.input_size(data, "classification")
        )
        rows.append({"run": key, "method": key.split("-")[0], **spread(model, test, num_classes, batch_size)})
        print(json.dumps(rows[-1]), flush=True)
    info = run_info("cpu")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["run"].rsplit("-", 1)[0].removesuffix("-None"), []).append(row)  # over seeds
    lines = [
        f"# Prediction spread: {study.name}\n",
        f"{info['date']}, {info['device']}, torch {info['torch']}. Test set, last-epoch students; mean over seeds.\n",
        f"| method-fraction | seeds | top-1 (%) | distinct classes predicted (of {num_classes}) | share of the "
        f"{rows[0]['hubs']} most-predicted classes (%) | mean test feature's logit: those classes / the others |",
        "|---|---|---|---|---|---|",
    ]
    for name, members in groups.items():
        mean = {key: statistics.fmean(row[key] for row in members) for key in AVERAGED}
        lines.append(
            f"| {name} | {len(members)} | {100 * mean['accuracy']:.2f} | {mean['distinct_predicted']:.0f} | "
            f"{100 * mean['top_share']:.1f} | {mean['hub_mean_feature_logit']:.2f} / "
            f"{mean['other_mean_feature_logit']:.2f} |"
        )
    stem = f"prediction_spread_{Path(args.config).stem}"
    write_results(args.out or root, stem, {**info, "study": study.name}, rows, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
