"""What keying DIS's draws by each example's position would cost: drawing the sampled sets of a batch with one
generator (what the trainer does: one per micro-batch) against one generator per example (what would make two
accumulated micro-batches draw exactly what one batch of both draws). One CPU thread, a live teacher's `[B, C]`
logits. Writes `results/bench_keyed_draws.{jsonl,md}`.

    python benchmarks/bench_keyed_draws.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from run_info import median_ms, run_info, write_results

from hf_dis.sampling import build_sampler

RESULTS = Path(__file__).parent / "results"
REPEATS = 7


def measure(num_classes: int, batch_size: int, num_sampled: int) -> dict:
    sampler = build_sampler("dis", num_classes, num_sampled, seed=0)
    logits, labels = torch.randn(batch_size, num_classes), torch.randint(num_classes, (batch_size,))

    def one_generator() -> None:
        sampler.sample(logits, labels, torch.Generator().manual_seed(0))

    def one_per_example() -> None:
        for row in range(batch_size):
            sampler.sample(logits[row : row + 1], labels[row : row + 1], torch.Generator().manual_seed(row))

    batch, keyed = median_ms(one_generator, REPEATS), median_ms(one_per_example, REPEATS)
    return {"C": num_classes, "B": batch_size, "K": num_sampled, "batch_ms": batch, "keyed_ms": keyed,
            "extra_ms": keyed - batch}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    rows = [measure(c, 128, 64) for c in (10_000, 100_000)]
    info = run_info("cpu")
    lines = [
        "# DIS draws keyed per example\n",
        f"{info['date']}, {info['device']}, torch {info['torch']}, one thread. Median of {REPEATS} of drawing a "
        "batch's sampled sets (DIS, a live teacher's logits) with one generator, and with one generator per example.\n",
        "| C | B | K | one generator (ms) | one per example (ms) | extra per step (ms) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['C']:,} | {r['B']} | {r['K']} | {r['batch_ms']:.1f} | {r['keyed_ms']:.1f} | {r['extra_ms']:.1f} |"
              for r in rows]  # fmt: skip
    write_results(RESULTS, "bench_keyed_draws", info, rows, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
