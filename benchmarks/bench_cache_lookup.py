"""The teacher's logits at the sampled classes, read from a batch's teacher cache columns (top R classes in order, one
tail logit) two ways: by forming the `[B, C]` dense logits and gathering (`CachedTeacherLogits.dense`), and by the
sorted lookup that never forms them (`CachedTeacherLogits.lookup`). Median milliseconds per batch against C, for K'
sampled classes per example; `CachedTeacherLogits.at` switches from the first to the second above
`DENSE_LOOKUP_MAX_ENTRIES` dense entries, and this benchmark is where that threshold comes from. JSON lines, a
Markdown table and a plot.

    python benchmarks/bench_cache_lookup.py                  # CPU, under a minute; results/bench_cache_lookup.*
    python benchmarks/bench_cache_lookup.py --classes 1000 --repeats 3 --out /tmp/x   # seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from run_info import median_ms, run_info, write_results  # noqa: E402

from hf_dis.data import CachedTeacherLogits  # noqa: E402
from hf_dis.data.cached_logits import DENSE_LOOKUP_MAX_ENTRIES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def time_lookups(num_classes: int, args: argparse.Namespace) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    batch, ranked = args.batch_size, min(args.top_r, num_classes)
    top_classes = torch.stack([torch.randperm(num_classes, generator=generator)[:ranked] for _ in range(batch)])
    top_logits = torch.randn(batch, ranked, generator=generator).sort(dim=1, descending=True).values
    cached = CachedTeacherLogits(top_classes.int(), top_logits, top_logits[:, -1] - 1, num_classes)
    rows = []
    for sampled in args.sampled:
        classes = torch.randint(num_classes, (batch, sampled), generator=generator)
        dense = median_ms(lambda classes=classes: cached.dense().gather(1, classes), args.repeats)
        lookup = median_ms(lambda classes=classes: cached.lookup(classes), args.repeats)
        rows.append({"num_classes": num_classes, "sampled": sampled, "dense_ms": dense, "lookup_ms": lookup})
        print(f"C={num_classes:>9,} K'={sampled:>5}: dense {dense:8.2f} ms, lookup {lookup:8.2f} ms")
    return rows


def markdown(rows: list[dict], info: dict) -> str:
    header = (
        f"# Teacher logits at the sampled classes, from the cache columns\n\n{info['date']}, {info['device']}, torch "
        f"{info['torch']}, hf_dis {info['hf_dis']}. Batch {info['batch_size']}, top R = {info['top_r']:,} cached "
        f"classes per example, median of {info['repeats']} batches; `CachedTeacherLogits.at` forms the dense logits "
        f"up to {DENSE_LOOKUP_MAX_ENTRIES:,} entries (C = {DENSE_LOOKUP_MAX_ENTRIES // info['batch_size']:,} at this "
        "batch) and looks up beyond.\n\n"
        "| C | K' | dense [B, C] and gather (ms) | sorted lookup (ms) |\n|---|---|---|---|\n"
    )
    return header + "\n".join(
        f"| {row['num_classes']:,} | {row['sampled']} | {row['dense_ms']:.2f} | {row['lookup_ms']:.2f} |"
        for row in rows
    )


def plot(rows: list[dict], info: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampled in sorted({row["sampled"] for row in rows}):
        same = [row for row in rows if row["sampled"] == sampled]
        classes = [row["num_classes"] for row in same]
        ax.plot(classes, [row["dense_ms"] for row in same], "o-", label=f"dense and gather, K' = {sampled}")
        ax.plot(classes, [row["lookup_ms"] for row in same], "s--", label=f"sorted lookup, K' = {sampled}")
    ax.axvline(DENSE_LOOKUP_MAX_ENTRIES / info["batch_size"], color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="classes C", ylabel="ms per batch", title="Cached teacher logits on S")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 20_000, 33_000, 50_000, 100_000, 1_000_000])
    parser.add_argument("--sampled", type=int, nargs="+", default=[66, 258], help="K' sampled classes per example")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--top-r", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [row for num_classes in args.classes for row in time_lookups(num_classes, args)]
    info = {**run_info("cpu"), "batch_size": args.batch_size, "top_r": args.top_r, "repeats": args.repeats}
    write_results(args.out, "bench_cache_lookup", info, rows, markdown(rows, info))
    plot(rows, info, args.out / "bench_cache_lookup.png")


if __name__ == "__main__":
    main()
