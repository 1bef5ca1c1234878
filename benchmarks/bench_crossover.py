"""Where sampling pays: the head step of full KD against DIS's over the number of classes C, the feature width d, the
batch B and the sampled count K, and what `sampler="auto"` picks in each cell.

The head step is what the trainer runs per step on the student's last layer: the classifier, the KD loss, the
backward and the classifier's update (`hf_dis.diagnostics.head_step_ms`): for full KD over all C rows with dense SGD
(momentum 0.9, as the recipes train); for DIS over its draws (drawing included) with the row-sparse SGD update the
trainer uses with `classifier_optimizer="row_sparse"`. Random features and teacher logits: the backbone and the
teacher cost the same under both methods and are not part of it. The `auto` column is `sampler="auto"`'s own choice
for the cell (`hf_dis.trainer.auto_sampler.time_sampler_choice`, timed separately from `full_ms` / `dis_ms`, with
`--auto-repeats` steps each), so a cell where it disagrees with the measured times is a real miss of the rule.

    python benchmarks/bench_crossover.py --device cpu            # the committed CPU map (about an hour on 2 cores)
    python benchmarks/bench_crossover.py --device cuda           # the GPU form
    python benchmarks/bench_crossover.py --smoke --out /tmp/x    # tiny sizes, seconds (the test suite runs this)

Results: `crossover.jsonl` (one row per cell: classes, width, batch_size, num_sampled, device, full_ms, dis_ms,
dis_over_full, auto, faster), `crossover.md` (the map, and per width and batch the smallest C where DIS is faster by
more than 20%) and `crossover.png` (DIS's time over full KD's against C).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from run_info import run_info, write_results  # noqa: E402

import hf_dis  # noqa: E402
from hf_dis.diagnostics import head_step_ms  # noqa: E402
from hf_dis.trainer.auto_sampler import AUTO_MAX_HEAD_RATIO, time_sampler_choice  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEMPERATURE = 2.0
#: Two options "differ" when the slower takes more than this factor of the faster's time: where auto must be right.
DIFFERENCE = 1.2


def cells(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(C, d, B) in the order they run: small heads first, so that a stopped run has the cheap part of the map."""
    return sorted(itertools.product(args.classes, args.widths, args.batch_sizes), key=lambda c: (c[0], c[1] * c[2]))


def run_cell(num_classes: int, width: int, batch_size: int, args: argparse.Namespace) -> list[dict]:
    sizes = (num_classes, width, batch_size)
    options = dict(temperature=TEMPERATURE, device=args.device)
    full_ms = head_step_ms(*sizes, update="sgd", repeats=args.repeats, **options)
    rows = []
    for num_sampled in (k for k in args.num_sampled if k < num_classes):
        dis = hf_dis.build_sampler("dis", num_classes, num_sampled)
        dis_ms = head_step_ms(*sizes, dis, update="row_sparse_sgd", repeats=args.repeats, **options)
        auto = time_sampler_choice(
            *sizes, dis, optim="sgd", classifier_optimizer="row_sparse", repeats=args.auto_repeats, **options
        )
        ratio = dis_ms / full_ms
        faster = "dis" if ratio * DIFFERENCE < 1 else "full" if ratio > DIFFERENCE else "either"
        rows.append({"classes": num_classes, "width": width, "batch_size": batch_size, "num_sampled": num_sampled,
                     "device": str(args.device), "full_ms": full_ms, "dis_ms": dis_ms, "dis_over_full": ratio,
                     "auto": auto.choice, "auto_full_ms": auto.full_ms, "auto_dis_ms": auto.dis_ms,
                     "faster": faster})  # fmt: skip
        print(f"C={num_classes:>8} d={width:>5} B={batch_size:>4} K={num_sampled:>5}: full {full_ms:9.2f} ms, "
              f"dis {dis_ms:9.2f} ms ({ratio:.2f}x), auto {auto.choice}", flush=True)  # fmt: skip
    return rows


def auto_is_right(row: dict) -> bool:
    """Right where the two differ by more than 20%: the faster one; elsewhere either is."""
    return row["faster"] == "either" or row["auto"] == row["faster"]


def crossover(rows: list[dict], width: int, batch_size: int, num_sampled: int) -> int | None:
    """The smallest C of the map from which on DIS is faster by more than 20% at every larger C measured."""
    ratios = sorted((r["classes"], r["dis_over_full"]) for r in rows
                    if (r["width"], r["batch_size"], r["num_sampled"]) == (width, batch_size, num_sampled))  # fmt: skip
    found = None
    for num_classes, ratio in reversed(ratios):
        if ratio * DIFFERENCE >= 1:
            break
        found = num_classes
    return found


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Where sampling pays: head step of full KD and DIS ({meta['device']})",
        "",
        f"{meta['date']}, torch {meta['torch']}, hf_dis {meta['hf_dis']}. `benchmarks/bench_crossover.py "
        f"{meta['command']}`. Median of {meta['repeats']} steps per method and cell (auto's own timing: "
        f"{meta['auto_repeats']}); full KD with dense SGD over all C rows, DIS with the row-sparse SGD update. auto "
        f"takes DIS at up to {AUTO_MAX_HEAD_RATIO:g}x; it must be right where one option is over 1.2x the other.",
        "",
        f"auto right in {sum(map(auto_is_right, rows))} of {len(rows)} cells "
        f"({sum(r['faster'] != 'either' for r in rows)} where the two differ by more than 20%).",
        "",
        "## Smallest C from which DIS is faster by more than 20% (and at every larger C measured)",
        "",
        "| width d | batch B | " + " | ".join(f"K = {k}" for k in meta["num_sampled"]) + " |",
        "|---|---|" + "---|" * len(meta["num_sampled"]),
    ]
    for width, batch_size in sorted({(r["width"], r["batch_size"]) for r in rows}):
        found = [crossover(rows, width, batch_size, k) for k in meta["num_sampled"]]
        lines.append(f"| {width} | {batch_size} | " + " | ".join("-" if c is None else f"{c:,}" for c in found) + " |")
    lines += ["", "## Every cell", "", "| C | d | B | K | full ms | DIS ms | DIS / full | faster | auto |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        mark = "" if auto_is_right(r) else " (wrong)"
        lines.append(f"| {r['classes']:,} | {r['width']} | {r['batch_size']} | {r['num_sampled']} | "
                     f"{r['full_ms']:.2f} | {r['dis_ms']:.2f} | {r['dis_over_full']:.2f} | {r['faster']} | "
                     f"{r['auto']}{mark} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    widths, batch_sizes = sorted({r["width"] for r in rows}), sorted({r["batch_size"] for r in rows})
    figure, axes = plt.subplots(1, len(batch_sizes), figsize=(6 * len(batch_sizes), 4.5), squeeze=False)
    for axis, batch_size in zip(axes[0], batch_sizes, strict=True):
        styles = itertools.cycle("-o -s -^ --o --s --^ :o :s :^".split())
        for (width, num_sampled), style in zip(itertools.product(widths, meta["num_sampled"]), styles, strict=False):
            cell = (width, batch_size, num_sampled)
            points = sorted((r["classes"], r["dis_over_full"]) for r in rows
                            if (r["width"], r["batch_size"], r["num_sampled"]) == cell)  # fmt: skip
            if points:
                axis.plot(*zip(*points, strict=True), style, label=f"d={width}, K={num_sampled}")
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.axhline(1 / DIFFERENCE, color="grey", lw=0.8, ls=":")
        axis.set(xscale="log", yscale="log", xlabel="classes C", ylabel="DIS head step / full KD head step",
                 title=f"batch {batch_size}, {meta['device']}")  # fmt: skip
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--num-sampled", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per method and cell (the median)")
    parser.add_argument("--auto-repeats", type=int, default=3, help="timed steps of auto's own choice per cell")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = " ".join(argv) if argv is not None else " ".join(__import__("sys").argv[1:])
    if args.smoke:
        args.classes, args.widths, args.batch_sizes, args.num_sampled = [50, 400], [16], [8], [4, 64]
        args.repeats = args.auto_repeats = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    meta = {**run_info(args.device), "command": command, "repeats": args.repeats, "auto_repeats": args.auto_repeats,
            "num_sampled": args.num_sampled}  # fmt: skip
    partial = args.out / "crossover.partial.jsonl"  # rows so far: a stopped run resumes from them
    args.out.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    rows = list(done)
    for num_classes, width, batch_size in cells(args):
        if any((r["classes"], r["width"], r["batch_size"]) == (num_classes, width, batch_size) for r in done):
            continue
        new = run_cell(num_classes, width, batch_size, args)
        rows += new
        with open(partial, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in new)
    write_results(args.out, "crossover", meta, rows, markdown(rows, meta))
    plot(rows, args.out / "crossover.png", meta)
    partial.unlink()
    wrong = [r for r in rows if not auto_is_right(r)]
    print(f"auto right in {len(rows) - len(wrong)} of {len(rows)} cells; results in {args.out}")


if __name__ == "__main__":
    main()
