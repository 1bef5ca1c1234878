"""DIS's refit (`DISSampler.observe`: the rank statistic folded in, the Laplace mixture refitted by EM) in a process
alone and in one where another Python thread runs (as a training process's pin-memory thread does while the loader
delivers batches): milliseconds per refit, median of `--repeats`.

Why: in the GPU glyph studies, DIS runs took 1.5-1.8x as long as FTIS runs although `bench_trainer` (no loader
threads) timed their steps alike; stack samples of the studies' processes put half of a DIS run's training time in
the refit's EM. A refit that runs thousands of small operations is only as fast as its hold on the GIL: every torch
operation lets go of it, and taking it back from a thread that runs Python costs up to the interpreter's switch
interval (5 ms). The busy thread here is the worst case of that contention, not a model of a loader.

    python benchmarks/bench_refit.py        # CPU, about a minute; writes results/bench_refit.{jsonl,md,png}
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from run_info import run_info, write_results  # noqa: E402

from hf_dis.sampling import build_sampler  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class BusyThread:
    """A daemon thread that runs Python (and so wants the GIL) until stopped."""

    def __enter__(self) -> BusyThread:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def time_refits(num_classes: int, repeats: int) -> list[float]:
    """Milliseconds of `repeats` refits of a DIS sampler at C classes, from seeded random rank statistics."""
    sampler = build_sampler("dis", num_classes, max(1, num_classes // 50))
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        statistic = torch.rand(sampler.edges.numel() - 1, generator=generator, dtype=torch.float64) ** 3
        start = time.perf_counter()
        sampler.observe(statistic)
        sampler.rank_probs(sampler.rank_limit)  # what the next sampled step computes from the refit
        times.append(1000 * (time.perf_counter() - start))
    return times


def markdown(rows: list[dict], meta: dict) -> str:
    header = (
        f"# DIS refit\n\n{meta['date']}, {meta['device']}, torch {meta['torch']}, hf_dis {meta['hf_dis']}, Python "
        f"{meta['python']} (switch interval {meta['switch_interval_ms']:g} ms). Milliseconds per refit "
        "(`DISSampler.observe` and the proposal over ranks), median.\n\n"
        "| C | alone | with a busy Python thread | repeats |\n|---|---|---|---|\n"
    )
    return header + "\n".join(
        f"| {row['num_classes']:,} | {row['alone_ms']:.1f} | {row['busy_thread_ms']:.1f} | {row['repeats']} |"
        for row in rows
    )


def plot(rows: list[dict], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 3.5))
    labels = [f"C={row['num_classes']:,}" for row in rows]
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], [row["alone_ms"] for row in rows], 0.4, label="alone")
    axis.bar([p + 0.2 for p in positions], [row["busy_thread_ms"] for row in rows], 0.4, label="busy Python thread")
    axis.set_xticks(list(positions), labels)
    axis.set_yscale("log")
    axis.set_ylabel("ms per refit")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 3755, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    meta = {**run_info("cpu"), "switch_interval_ms": 1000 * sys.getswitchinterval()}
    rows = []
    for num_classes in args.classes:
        alone = time_refits(num_classes, args.repeats)
        with BusyThread():
            busy = time_refits(num_classes, args.repeats)
        rows.append(
            {
                "num_classes": num_classes,
                "alone_ms": statistics.median(alone),
                "busy_thread_ms": statistics.median(busy),
                "repeats": args.repeats,
            }
        )
        print(rows[-1], flush=True)
        write_results(args.out, "bench_refit", meta, rows, markdown(rows, meta) + "\n")
    plot(rows, args.out / "bench_refit.png")
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
