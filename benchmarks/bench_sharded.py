"""Memory and time per process of the student's classifier sharded over N processes (`classifier_parallel=True`)
against one process holding it whole, in the same run: the classifier of C classes x d features, its row-sparse
AdamW state, and one sampled DIS step (draws from a teacher cache's top-R columns, the sampled KD and CE, backward,
the update of the sampled rows) on random features standing in for the backbone's, global batch B.

Each configuration runs in fresh processes (spawned; gloo for the sharded one), each with `--threads` / N threads so
that both use the same cores. Per process: the peak resident set (VmHWM) over the whole run, the resident set before
the classifier is built (the interpreter and libraries), and the peak above it; the median step time. On Linux with
glibc, every allocation over 128 KiB is mapped on its own and given back when freed, so the resident set follows the
live tensors (as in bench_head.py). The sharded processes build only their own rows.

    python benchmarks/bench_sharded.py --classes 1000000 --out benchmarks/results/cpu_sharded   # the committed run
    python benchmarks/bench_sharded.py --smoke --out /tmp/x   # tiny sizes, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from run_info import run_info, write_results  # noqa: E402

import hf_dis  # noqa: E402
from hf_dis.data import CachedTeacherLogits  # noqa: E402
from hf_dis.heads import RowSparseAdamW, SampledLinear  # noqa: E402
from hf_dis.heads.sharded import ShardedLinear, class_shard  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEMPERATURE, ALPHA = 2.0, 0.5


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cache_columns(batch: int, num_classes: int, top_r: int, generator: torch.Generator) -> CachedTeacherLogits:
    """A teacher cache's columns for the global batch: R distinct classes per example in descending logit order."""
    # clone each row's R ids: a slice would keep its whole C-long permutation alive until the stack (B x C x 8 bytes)
    classes = torch.stack([torch.randperm(num_classes, generator=generator)[:top_r].clone() for _ in range(batch)])
    logits = torch.randn(batch, top_r, generator=generator).sort(dim=1, descending=True).values * 3
    return CachedTeacherLogits(classes, logits, logits[:, -1] - 1.0, num_classes)


def measure(rank: int, world_size: int, options: argparse.Namespace, init_file: str, results: dict) -> None:
    """One process of a configuration: build its classifier (whole, or its shard), time the steps, record memory."""
    torch.set_num_threads(max(options.threads // world_size, 1))
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: freed tensors leave the resident set
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    baseline = _status_mb("VmRSS")
    num_classes, width, batch = options.classes, options.features, options.batch_size
    generator = torch.Generator().manual_seed(rank)
    if world_size > 1:
        shard = class_shard(num_classes, rank, world_size)
        rows = torch.randn(shard.size, width, generator=generator).mul_(0.01)
        head = ShardedLinear(rows, torch.zeros(shard.size), shard)
        del rows
    else:
        head = SampledLinear(torch.nn.Linear(width, num_classes))
    head.sparse_grad = True
    optimizer = RowSparseAdamW([{"params": [head.weight]}, {"params": [head.bias], "weight_decay": 0.0}], lr=1e-3)
    sampler = hf_dis.build_sampler("dis", num_classes, options.num_sampled)
    local_batch = batch // world_size
    times = []
    for step in range(options.warmup + options.steps):
        # the same global batch on every process (and in the one-process run): seeded by the step only
        data = torch.Generator().manual_seed(10_000 + step)
        teacher = _cache_columns(batch, num_classes, options.top_r, data)
        labels = teacher.top_classes[:, 0].clone()
        features = torch.randn(batch, width, generator=data)
        own = features[rank * local_batch : (rank + 1) * local_batch].requires_grad_(True)
        start = time.perf_counter()
        drawn = sampler.sample(teacher, labels, generator=torch.Generator().manual_seed(step))
        with head.restricted_to(drawn.classes):
            logits = head(own)
        loss = hf_dis.sampled_distillation_loss(logits, teacher, drawn, labels, TEMPERATURE, ALPHA).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= options.warmup:
            times.append((time.perf_counter() - start) * 1000)
    peak = _status_mb("VmHWM")
    results[rank] = {
        "rank": rank,
        "rows": head.weight.shape[0],
        "baseline_mb": round(baseline, 1),
        "peak_mb": round(peak, 1),
        "peak_above_baseline_mb": round(peak - baseline, 1),
        "step_ms": round(statistics.median(times), 2),
    }
    if world_size > 1:
        dist.destroy_process_group()


def run_configuration(world_size: int, options: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch, mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(measure, args=(world_size, options, f"{scratch}/init", results), nprocs=world_size, join=True)
        return [dict(results[rank], processes=world_size) for rank in range(world_size)]


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Sharded classifier: memory and time per process ({meta['device']}, {meta['date']})",
        "",
        f"C = {meta['classes']:,}, d = {meta['features']}, global batch {meta['batch_size']}, DIS K = "
        f"{meta['num_sampled']}, teacher cache top-R = {meta['top_r']}, RowSparseAdamW; {meta['steps']} timed steps.",
        "",
        "| processes | rank | rows | peak (MB) | before the classifier (MB) | peak above it (MB) | step (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['processes']} | {row['rank']} | {row['rows']:,} | {row['peak_mb']:,.0f} | "
            f"{row['baseline_mb']:,.0f} | {row['peak_above_baseline_mb']:,.0f} | {row['step_ms']:.1f} |"
        )
    one = next(row for row in rows if row["processes"] == 1)
    sharded = [row for row in rows if row["processes"] > 1]
    largest = max(sharded, key=lambda row: row["peak_mb"])
    slowest = max(row["step_ms"] for row in sharded)  # a step ends when its slowest process does
    lines += [
        "",
        f"Largest sharded process against the one process: peak {largest['peak_mb'] / one['peak_mb']:.2f}x, peak "
        f"above the runtime {largest['peak_above_baseline_mb'] / one['peak_above_baseline_mb']:.2f}x; slowest "
        f"sharded step {slowest / one['step_ms']:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    labels = [f"{row['processes']} proc, rank {row['rank']}" for row in rows]
    axis.bar(labels, [row["baseline_mb"] for row in rows], label="before the classifier")
    axis.bar(labels, [row["peak_above_baseline_mb"] for row in rows], bottom=[row["baseline_mb"] for row in rows],
             label="classifier, state and step")  # fmt: skip
    axis.set_ylabel("peak resident set (MB)")
    axis.set_title("Peak memory per process")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--num-sampled", type=int, default=256, help="DIS's K per example")
    parser.add_argument("--top-r", type=int, default=1024, help="classes per example in the teacher cache")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads in all, shared by a configuration's processes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: C = 2,000, batch 8, K 16, R 64, 2 steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_sharded")
    options = parser.parse_args()
    if options.smoke:
        options.classes, options.batch_size, options.num_sampled, options.top_r = 2000, 8, 16, 64
        options.steps, options.warmup = 2, 1
    if options.batch_size % options.processes:
        raise SystemExit(f"--batch-size {options.batch_size} must be a multiple of --processes {options.processes}.")
    rows = run_configuration(1, options) + run_configuration(options.processes, options)
    meta = {**run_info(), **{key: value for key, value in vars(options).items() if key not in ("out", "smoke")}}
    write_results(options.out, "bench_sharded", meta, rows, markdown(rows, meta))
    plot(rows, options.out / "bench_sharded.png")
    print((options.out / "bench_sharded.md").read_text())


if __name__ == "__main__":
    main()
