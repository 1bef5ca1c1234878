"""The overview of docs/results.md, from the studies' own rows (`benchmarks/results/reproduce_*.jsonl`): does
distillation help (scratch against full KD, per study), and does DIS keep full KD's accuracy in less time (per study
and sampled size). Means over each study's seeds. Writes `results/overview.md`, `results/overview_distillation.png`
and `results/overview_sampling.png`.

    python benchmarks/results_overview.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"

#: (rows file, label, classes, metric, hardware and budget, the study's page under docs/studies/)
STUDIES = [
    ("reproduce_glyphs_cpu_small", "glyphs, 300 classes", 300, "eval_accuracy", "CPU, 3 seeds", "glyphs_cpu_small"),
    ("reproduce_glyphs_gb2312_1000_cpu", "GB2312 glyphs, 1,000 classes", 1_000, "eval_accuracy", "CPU, 3 seeds",
     "glyphs_gb2312_1000_cpu"),
    ("reproduce_glyphs_gb2312_classification_short", "GB2312 glyphs, 3,755 classes", 3_755, "eval_accuracy",
     "one H100, 3 seeds", "glyphs_gb2312_gpu"),
    ("reproduce_glyphs_10k_cpu", "glyphs, 10,000 classes", 10_000, "eval_accuracy", "CPU, 1 seed", "glyphs_10k_cpu"),
    ("reproduce_glyphs_cjk20k_cpu", "CJK glyphs, 20,000 classes", 20_000, "eval_accuracy", "CPU, 1 seed",
     "glyphs_cjk20k_cpu"),
    ("reproduce_glyphs_reid_cpu_small", "glyph re-ID, 300 identities", 300, "eval_rank1", "CPU, 3 seeds",
     "glyphs_reid_cpu_small"),
    ("reproduce_glyphs_reid_short", "glyph re-ID, 2,816 identities", 2_816, "eval_rank1", "one H200, 3 seeds",
     "glyphs_reid_gpu"),
]  # fmt: skip


def mean_of(rows: list[dict], key: str) -> float:
    return statistics.fmean(row[key] for row in rows)


def study_summary(name: str, metric: str) -> dict:
    """Per (method, sampled size): the mean metric and training time over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for line in (RESULTS / f"{name}.jsonl").read_text().splitlines():
        row = json.loads(line)
        groups.setdefault((row["method"], row.get("fraction")), []).append(row)
    return {key: {"metric": mean_of(rows, metric), "time": mean_of(rows, "train_runtime"), "seeds": len(rows)}
            for key, rows in groups.items()}  # fmt: skip


def size_label(fraction: float) -> str:
    return f"K = {fraction:g}" if fraction >= 1 else f"{100 * fraction:g}%"


def main() -> None:
    distillation = [
        "| study | hardware, seeds | scratch | full KD | full KD - scratch | page |",
        "|---|---|---|---|---|---|",
    ]
    sampling = [
        "| study | DIS sampled size | DIS | full KD | DIS - full KD | DIS's training time / full KD's |",
        "|---|---|---|---|---|---|",
    ]
    bars, points = [], []
    for name, label, _, metric, hardware, page in STUDIES:
        summary = study_summary(name, metric)
        scratch, full = summary[("scratch", None)], summary[("full", None)]
        gain = 100 * (full["metric"] - scratch["metric"])
        distillation.append(
            f"| {label} ({metric.removeprefix('eval_')}) | {hardware} | {100 * scratch['metric']:.1f} | "
            f"{100 * full['metric']:.1f} | {gain:+.1f} | [{page}](studies/{page}.md) |"
        )
        bars.append((label, 100 * scratch["metric"], 100 * full["metric"]))
        for (method, fraction), entry in sorted(summary.items(), key=lambda item: str(item[0])):
            if method != "dis":
                continue
            difference, ratio = 100 * (entry["metric"] - full["metric"]), entry["time"] / full["time"]
            sampling.append(
                f"| {label} | {size_label(fraction)} | {100 * entry['metric']:.1f} | {100 * full['metric']:.1f} | "
                f"{difference:+.1f} | {ratio:.2f} |"
            )
            points.append((f"{label}, {size_label(fraction)}", ratio, difference))
    (RESULTS / "overview.md").write_text(
        "# Overview of the studies\n\nWritten by `benchmarks/results_overview.py` from each study's rows (means over "
        "its seeds; last-epoch metrics).\n\n## Does distillation help?\n\n" + "\n".join(distillation)
        + "\n\n## Does DIS keep full KD's accuracy, in less time?\n\n" + "\n".join(sampling) + "\n"
    )
    plot_distillation(bars, RESULTS / "overview_distillation.png")
    plot_sampling(points, RESULTS / "overview_sampling.png")
    print((RESULTS / "overview.md").read_text())


def plot_distillation(bars: list[tuple[str, float, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    positions = range(len(bars))
    ax.barh([p + 0.2 for p in positions], [full for _, _, full in bars], height=0.4, label="full KD")
    ax.barh([p - 0.2 for p in positions], [scratch for _, scratch, _ in bars], height=0.4, label="scratch")
    ax.set_yticks(list(positions), [label for label, _, _ in bars], fontsize=8)
    ax.set(xlabel="top-1 or rank-1 (%)", title="Does distillation help? (the student from scratch and with full KD)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_sampling(points: list[tuple[str, float, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, ratio, difference in points:
        ax.scatter(ratio, difference)
        ax.annotate(label, (ratio, difference), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set(xlabel="DIS's training time / full KD's", ylabel="DIS - full KD (points)",
           title="Does DIS keep full KD's accuracy in less time? (up and left is better)")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
