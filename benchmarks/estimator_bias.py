"""Bias and variance of the sampled KD gradient, per sampler, estimator and K (CPU; seeded; minutes).

For each case, the mean over `--repeats` draws of S of the sampled-KD gradient with respect to the student's logits
is compared with the full-KD gradient (`hf_dis.diagnostics.sampled_gradient_error`). Writes one JSON line per
case to `results/estimator_bias.jsonl`, a Markdown table to `results/estimator_bias.md` and a plot to
`results/estimator_bias.png`.

    python benchmarks/estimator_bias.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch
from run_info import write_results

import hf_dis
from hf_dis.diagnostics import sampled_gradient_error

RESULTS = Path(__file__).resolve().parent / "results"

# name: (C, B, teacher logit scale, student logit scale, T, K values)
CASES = {
    "small": (50, 4, 4.0, 2.0, 3.0, (5, 10, 20, 40)),
    "c1000": (1000, 8, 8.0, 4.0, 2.0, (10, 50, 100, 200)),
}
SAMPLERS = ("uniform", "ftis", "dis", "dis_fitted", "topk")


def make_logits(num_classes: int, batch: int, teacher_scale: float, student_scale: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, num_classes, generator=g) * teacher_scale
    # A student that agrees with the teacher in part, as during training.
    student = (
        0.5 * teacher / teacher_scale * student_scale + torch.randn(batch, num_classes, generator=g) * student_scale
    )
    return teacher, student


def run_case(case: str, repeats: int, seed: int) -> list[dict]:
    num_classes, batch, t_scale, s_scale, temperature, ks = CASES[case]
    teacher, student = make_logits(num_classes, batch, t_scale, s_scale, seed)
    rows = []
    for estimator in hf_dis.losses.ESTIMATORS:
        for name in SAMPLERS:
            for k in ks:
                options = {"proposal_temperature": temperature} if name in ("ftis", "topk") else {}
                sampler = hf_dis.build_sampler(
                    name.removesuffix("_fitted"), num_classes, k, force_label=False, seed=seed, **options
                )
                if name == "dis_fitted":  # one full-distillation probe on this batch, as the trainer does at step 0
                    sampler.update(teacher, student, temperature)
                error = sampled_gradient_error(
                    sampler,
                    teacher,
                    student,
                    temperature,
                    num_repeats=repeats,
                    estimator=estimator,
                    generator=torch.Generator().manual_seed(seed),
                )
                rows.append(
                    {
                        "case": case,
                        "num_classes": num_classes,
                        "batch": batch,
                        "temperature": temperature,
                        "estimator": estimator,
                        "sampler": name,
                        "num_sampled": k,
                        "repeats": repeats,
                        "relative_error": round(error.relative_error, 4),
                        "relative_std": round(error.relative_std, 4),
                    }
                )
                print(json.dumps(rows[-1]))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        case_rows = [r for r in rows if r["case"] == case]
        first = case_rows[0]
        ks = sorted({r["num_sampled"] for r in case_rows})
        lines += [
            f"### C = {first['num_classes']}, B = {first['batch']}, T = {first['temperature']}, "
            f"{first['repeats']} draws",
            "",
            "relative error of the mean sampled gradient (relative std of one draw)",
            "",
            "| estimator | sampler | " + " | ".join(f"K = {k}" for k in ks) + " |",
            "|---|---|" + "---|" * len(ks),
        ]
        for estimator in dict.fromkeys(r["estimator"] for r in case_rows):
            for name in SAMPLERS:
                cells = {r["num_sampled"]: r for r in case_rows if r["estimator"] == estimator and r["sampler"] == name}
                lines.append(
                    f"| {estimator} | {name} | "
                    + " | ".join(f"{cells[k]['relative_error']:.3f} ({cells[k]['relative_std']:.2f})" for k in ks)
                    + " |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, axes = plt.subplots(
        len(cases), len(estimators), figsize=(5 * len(estimators), 3.6 * len(cases)), squeeze=False
    )
    for i, case in enumerate(cases):
        for j, estimator in enumerate(estimators):
            ax = axes[i][j]
            for name in SAMPLERS:
                pts = sorted(
                    (r["num_sampled"], r["relative_error"])
                    for r in rows
                    if r["case"] == case and r["estimator"] == estimator and r["sampler"] == name
                )
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
            first = next(r for r in rows if r["case"] == case)
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="K (sampled classes)",
                ylabel="relative gradient error",
                title=f"{estimator}, C = {first['num_classes']}",
            )
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rows = [row for case in args.cases for row in run_case(case, args.repeats, args.seed)]
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "hf_dis": hf_dis.__version__,
        "python": platform.python_version(),
    }
    header = f"Generated by `benchmarks/estimator_bias.py` on {meta['date']}, {meta['device']}, torch {meta['torch']}."
    write_results(args.out, "estimator_bias", meta, rows, header + "\n\n" + markdown(rows))
    plot(rows, args.out / "estimator_bias.png")


if __name__ == "__main__":
    main()
