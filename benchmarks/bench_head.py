"""The cost of the student's last layer per training step: head forward, distillation loss, backward and the
classifier's optimizer step, for full KD against the samplers, as the number of classes C grows.

Rows: `full` (dense head, Hinton KD, AdamW over all C rows) and, for uniform / ftis / dis in both scopes and several
K, the sampled head and loss (drawing included) followed by dense AdamW, or with a sparse weight gradient and
`RowSparseAdamW` on the sampled rows only (what `classifier_optimizer="row_sparse"` does), per entry or with one
second moment per row (`optim_args="second_moment=row"`). Milliseconds per step
(median), the memory live between steps (weights, optimizer state, inputs) and the peak memory during the timed
steps (the live memory plus the step's own peak): on a GPU from torch's allocator; on a Linux CPU from the resident
set, less the resident set before the first case (the interpreter and libraries), with glibc told to map every
allocation over 128 KiB on its own and give it back when freed (so the resident set follows the live tensors).
Random features and teacher logits (the teacher's and the backbone's costs are not part of this benchmark: see
bench_step).

    python benchmarks/bench_head.py                     # GPU: C up to 10^6, batch 256, features 512
    python benchmarks/bench_head.py --device cpu --batch-size 64 --repeats 3   # the committed CPU run
    python benchmarks/bench_head.py --device cpu --classes 1000000 --samplers dis --batch-size 64 --out /tmp/1e6
    python benchmarks/bench_head.py --smoke --out /tmp/x  # tiny sizes, seconds (the test suite runs this)
    python benchmarks/bench_head.py --profile --classes 100 1000000   # where a step's time goes (below)

`--profile` records one more step of each case under `torch.profiler`: the kernels it launches and the host-device
synchronisations it makes (on a CPU: the top-level ATen operators it runs, and the operators that would synchronise
on an accelerator, `hf_dis.diagnostics.host_sync_ops`, with hf_dis's value checks off as they are there, torch
AdamW's reads of its step count included, which are host tensors there), its three most expensive operators by self
time and, on a GPU, the three that allocate the most device memory: what the fixed per-step cost of sampling and its
peak memory are made of.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
from pathlib import Path
from unittest import mock

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from run_info import run_info, write_results  # noqa: E402

import hf_dis  # noqa: E402
from hf_dis.diagnostics import host_sync_ops, median_step_ms  # noqa: E402
from hf_dis.heads import RowSparseAdamW  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLASS_COUNTS = [100, 751, 10_000, 100_000, 1_000_000]
#: The sampled rows' classifier updates: dense AdamW; RowSparseAdamW (the sampled rows only); and with one second
#: moment per row (`row_wise_second_moment`: a third less memory for the weight and its state).
OPTIMIZERS = ("adamw", "row_sparse_adamw", "row_sparse_adamw_rowwise")
TEMPERATURE = 2.0


def sample_sizes(num_classes: int) -> list[int]:
    """K: a tenth of the classes for small C; 256, 1024 and 4096 where they are below C / 4."""
    sizes = [k for k in (256, 1024, 4096) if 4 * k <= num_classes]
    return sizes or [max(num_classes // 10, 1)]


def track_cpu_memory() -> float | None:
    """Make the resident set follow the live allocations (glibc: a fixed 128 KiB mmap threshold) and return the
    current resident set (MB), the baseline the CPU peaks are taken from; None where this is not Linux with glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: also turns off its dynamic growth
        return _proc_status_mb("VmRSS")
    except (OSError, AttributeError):
        return None


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1)) / 1024


def time_steps(
    step, device: torch.device, repeats: int, cpu_baseline: float | None
) -> tuple[float, float | None, float | None]:
    """Median milliseconds of `step()` after two warm-up calls, the memory (MB) live between steps (weights,
    optimizer state, inputs) and the peak of the timed calls: torch's allocator on a GPU, the resident set above
    `cpu_baseline` on a CPU (None without a baseline)."""
    for _ in range(2):
        step()
    live = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        live = torch.cuda.memory_allocated(device) / 2**20
    elif cpu_baseline is not None:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak resident set (VmHWM) to the current one
        live = _proc_status_mb("VmRSS") - cpu_baseline
    milliseconds = median_step_ms(step, device, repeats, warmup=0)
    if device.type == "cuda":
        return milliseconds, live, torch.cuda.max_memory_allocated(device) / 2**20
    return milliseconds, live, None if cpu_baseline is None else _proc_status_mb("VmHWM") - cpu_baseline


#: CUDA runtime calls that block the host until the device has caught up.
SYNCHRONISING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
KERNEL_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def profile_step(step, device: torch.device) -> dict:
    """One call of `step()` under torch.profiler: kernels launched and synchronisations (GPU) or top-level ATen
    operators run and operators that would synchronise on an accelerator (CPU), the three operators with the most
    self time and, on a GPU, the three that allocate the most device memory (MB)."""
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities, profile_memory=cuda) as profiler:
        step()
        if cuda:
            torch.cuda.synchronize(device)
    events, averages = profiler.events(), profiler.key_averages()
    top = sorted(averages, key=lambda event: event.self_device_time_total if cuda else event.self_cpu_time_total,
                 reverse=True)[:3]  # fmt: skip
    if not cuda:
        launches = sum(event.name.startswith("aten::") and event.cpu_parent is None for event in events)
        with mock.patch.dict(os.environ, {"HF_DIS_CHECK_VALUES": "0"}):  # value checks off, as on an accelerator
            syncs = sum(host_sync_ops(step).values())
        return {"launches": launches, "syncs": syncs, "top_ops": [event.key for event in top]}
    allocating = sorted(averages, key=lambda event: event.self_device_memory_usage, reverse=True)[:3]
    return {
        "launches": sum(event.name in KERNEL_LAUNCHES for event in events),
        "syncs": sum(event.name in SYNCHRONISING_CALLS for event in events),
        "top_ops": [event.key for event in top],
        "top_memory_ops": [f"{event.key} {event.self_device_memory_usage / 2**20:.0f}" for event in allocating],
    }


def run_case(
    num_classes: int, args: argparse.Namespace, device: torch.device, cpu_baseline: float | None
) -> list[dict]:
    generator = torch.Generator(device=device).manual_seed(0)
    features = torch.randn(args.batch_size, args.width, device=device, generator=generator, requires_grad=True)
    teacher_logits = 4 * torch.randn(args.batch_size, num_classes, device=device, generator=generator)
    labels = torch.randint(num_classes, (args.batch_size,), device=device, generator=generator)
    rows = []

    def record(method: str, step, **fields) -> None:
        milliseconds, live, peak = time_steps(step, device, args.repeats, cpu_baseline)
        profile = profile_step(step, device) if args.profile else {}
        rows.append({"num_classes": num_classes, "method": method, "ms": milliseconds, "live_mb": live, "peak_mb": peak,
                     **fields,
                     **profile})  # fmt: skip
        print(f"C={num_classes:>8} {method:<40} {milliseconds:9.3f} ms" + (f" {peak:9.1f} MB" if peak else ""))

    head = torch.nn.Linear(args.width, num_classes, device=device)
    full_optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)

    def full_step(optimizer=full_optimizer) -> None:
        loss = hf_dis.distillation_loss(head(features), teacher_logits, labels, TEMPERATURE, 0.1).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    record("full", full_step, sampler="full", scope=None, num_sampled=num_classes, optimizer="adamw")
    del full_step, full_optimizer  # free its moment buffers before measuring the sampled rows' peak memory
    for num_sampled in sample_sizes(num_classes):
        for sampler_name in args.samplers:
            for scope in ("per_example", "batch"):
                options = {"proposal_temperature": TEMPERATURE} if sampler_name in ("ftis", "topk") else {}
                sampler = hf_dis.build_sampler(sampler_name, num_classes, num_sampled, scope=scope, **options)
                for optimizer_name in OPTIMIZERS:
                    if optimizer_name == "adamw":
                        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
                    else:
                        row_wise = optimizer_name == "row_sparse_adamw_rowwise"
                        optimizer = RowSparseAdamW(head.parameters(), lr=1e-3, row_wise_second_moment=row_wise)

                    def sampled_step(sampler=sampler, optimizer=optimizer, optimizer_name=optimizer_name) -> None:
                        drawn = sampler.sample(teacher_logits, labels, generator=generator)
                        row_sparse = optimizer_name != "adamw"  # sparse gradient, sampled rows updated
                        student = hf_dis.subset_logits(features, head, drawn.classes, sparse_grad=row_sparse)
                        loss = hf_dis.sampled_distillation_loss(
                            student, teacher_logits, drawn, labels, TEMPERATURE, 0.1
                        )
                        loss.loss.backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)

                    method = f"{sampler_name}/{scope}/K={num_sampled}/{optimizer_name}"
                    fields = dict(sampler=sampler_name, scope=scope, num_sampled=num_sampled, optimizer=optimizer_name)
                    record(method, sampled_step, **fields)
    return rows


def markdown(rows: list[dict]) -> str:
    profiled = "launches" in rows[0]
    lines = ["| C | method | ms / step | x full | live MB | peak MB |", "|---|---|---|---|---|---|"]
    memory_profiled = "top_memory_ops" in rows[0]
    if profiled:
        lines = [lines[0] + " launches | syncs | top operators |", lines[1] + "---|---|---|"]
    if memory_profiled:
        lines = [lines[0] + " top allocations (MB) |", lines[1] + "---|"]
    full = {row["num_classes"]: row["ms"] for row in rows if row["method"] == "full"}
    for row in rows:
        live, peak = ("-" if row[key] is None else f"{row[key]:.0f}" for key in ("live_mb", "peak_mb"))
        speedup = full[row["num_classes"]] / row["ms"]
        line = f"| {row['num_classes']:,} | {row['method']} | {row['ms']:.3f} | {speedup:.2f} | {live} | {peak} |"
        if profiled:
            line += f" {row['launches']} | {row['syncs']} | {', '.join(row['top_ops'])} |"
        if memory_profiled:
            line += f" {', '.join(row['top_memory_ops'])} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    counts = sorted({row["num_classes"] for row in rows})
    methods = {"full": ("full", None, None)}
    for row in rows:
        if row["method"] != "full" and row["num_sampled"] == max(sample_sizes(row["num_classes"])):
            methods[f"{row['sampler']}/{row['scope']}/{row['optimizer']}"] = (
                row["sampler"],
                row["scope"],
                row["optimizer"],
            )
    for label, (sampler, scope, optimizer) in methods.items():
        points = [(row["num_classes"], row["ms"]) for row in rows if row["sampler"] == sampler
                  and row.get("scope") == scope and (optimizer is None or row["optimizer"] == optimizer)
                  and (sampler == "full" or row["num_sampled"] == max(sample_sizes(row["num_classes"])))]  # fmt: skip
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label, linewidth=2.5 if sampler == "full" else 1)
    ax.set(xscale="log", yscale="log", xlabel="classes C", ylabel="ms per step (head + loss + update)", xticks=counts)
    ax.set_title("Last-layer cost per step (largest K per C)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=CLASS_COUNTS, help="values of C")
    parser.add_argument("--max-classes", type=int, default=CLASS_COUNTS[-1], help="skip the values of C above it")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--samplers", nargs="+", default=["uniform", "ftis", "dis"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: C in (100, 751), batch 8, width 16")
    parser.add_argument("--profile", action="store_true", help="count each step's kernels and synchronisations")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.smoke:
        args.max_classes, args.batch_size, args.width, args.repeats = 751, 8, 16, 2
    device = torch.device(args.device)
    cpu_baseline = track_cpu_memory() if device.type == "cpu" else None
    counts = [count for count in args.classes if count <= args.max_classes]
    rows = [row for count in counts for row in run_case(count, args, device, cpu_baseline)]
    memory = "torch allocator peak" if device.type == "cuda" else "peak resident set above the runtime's"
    info = {**run_info(device), "batch_size": args.batch_size, "width": args.width, "repeats": args.repeats,
            "peak_memory": memory if device.type == "cuda" or cpu_baseline is not None else "not measured"}  # fmt: skip
    header = (
        f"Generated by `benchmarks/bench_head.py` on {info['date']}: {info['device']}, torch {info['torch']}, batch "
        f"{args.batch_size}, features {args.width}, median of {args.repeats} steps; peak MB: {info['peak_memory']}."
    )
    if args.profile:
        header += (
            " Profiled: one more step per row; launches = kernels launched (GPU) or top-level ATen operators run "
            "(CPU); syncs = host-device synchronisations (GPU) or operators that would make one on an accelerator "
            "(CPU: hf_dis.diagnostics.host_sync_ops, torch AdamW's reads of its host-side step count included); top "
            "operators by self time"
            + ("; top allocations: operators by device memory allocated." if device.type == "cuda" else ".")
        )
    write_results(args.out, "bench_head", info, rows, header + "\n\n" + markdown(rows))
    plot(rows, args.out / "bench_head.png")


if __name__ == "__main__":
    main()
