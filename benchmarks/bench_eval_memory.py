"""Evaluation's memory at many classes: the peak resident memory a `Trainer.evaluate` with the library's
`classification_metrics` adds, with each batch reduced to its top-5 class ids (`top_classes_for_metrics`, what
`DistillationTrainer` and the recipes set) against the Trainer's default of accumulating every example's `[C]`
logits.

A linear classifier on random features (the backbone does not matter here), C classes, N examples, each case in a
process of its own; the growth is the peak resident set during `evaluate()` (Linux `VmHWM`, reset just before)
less the resident set before it.

    python benchmarks/bench_eval_memory.py                  # C = 200,000, N = 2,000: results/bench_eval_memory.*
    python benchmarks/bench_eval_memory.py --smoke --out /tmp/x
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import tempfile
from pathlib import Path

import torch
from run_info import run_info, write_results
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_dis.metrics import classification_metrics, top_classes_for_metrics

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH = 64


class LinearClassifier(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, num_classes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(features)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class RandomFeatures(torch.utils.data.Dataset):
    def __init__(self, count: int, num_classes: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.features = torch.randn(count, WIDTH, generator=generator)
        self.labels = torch.randint(num_classes, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "labels": self.labels[index]}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1)) / 1024


def measure(case: str, num_classes: int, count: int, batch_size: int, queue) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir=output_dir, per_device_eval_batch_size=batch_size, use_cpu=True,
                                 report_to="none", disable_tqdm=True)  # fmt: skip
        reduce = top_classes_for_metrics if case == "ranked" else None
        trainer = Trainer(model=LinearClassifier(num_classes), args=args, compute_metrics=classification_metrics,
                          preprocess_logits_for_metrics=reduce)  # fmt: skip
        data = RandomFeatures(count, num_classes)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the peak resident set starts again from here
        before = _status_mb("VmRSS")
        metrics = trainer.evaluate(data)
        queue.put({"case": case, "classes": num_classes, "examples": count, "batch_size": batch_size,
                   "peak_growth_mb": _status_mb("VmHWM") - before, "accuracy": metrics["eval_accuracy"],
                   "top5": metrics["eval_top5"]})  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--examples", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.classes, args.examples, args.batch_size = 5_000, 200, 50
    context = multiprocessing.get_context("spawn")
    rows = []
    for case in ("ranked", "logits"):
        queue = context.Queue()
        if args.smoke:  # in this process: its peaks mean little, but the code runs (and starts in seconds)
            measure(case, args.classes, args.examples, args.batch_size, queue)
        else:
            process = context.Process(target=measure, args=(case, args.classes, args.examples, args.batch_size, queue))
            process.start()
            process.join()
        rows.append(queue.get())
        print(rows[-1], flush=True)
    if rows[0]["accuracy"] != rows[1]["accuracy"] or rows[0]["top5"] != rows[1]["top5"]:
        raise RuntimeError(f"the two evaluations disagree: {rows}")
    meta = {**run_info("cpu"), "command": " ".join(argv or __import__("sys").argv[1:])}
    logits_mb = args.examples * args.classes * 4 / 2**20
    lines = [
        f"# Evaluation's memory at {args.classes:,} classes ({meta['device']})",
        "",
        f"{meta['date']}, torch {meta['torch']}, hf_dis {meta['hf_dis']}. `benchmarks/bench_eval_memory.py "
        f"{meta['command']}`. `Trainer.evaluate` of {args.examples:,} examples in batches of {args.batch_size} with "
        f"`classification_metrics`; the logits of the whole set are {logits_mb:,.0f} MB of float32. Both cases give "
        f"the same metrics (accuracy {rows[0]['accuracy']:.4f}, top-5 {rows[0]['top5']:.4f}).",
        "",
        "| accumulated | peak growth (MB) |",
        "|---|---|",
        f"| top-5 class ids (`top_classes_for_metrics`) | {rows[0]['peak_growth_mb']:,.0f} |",
        f"| `[N, C]` logits (the Trainer's default) | {rows[1]['peak_growth_mb']:,.0f} |",
    ]
    write_results(args.out, "bench_eval_memory", meta, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
