"""Whole distillation steps with timm backbones: the limits, with no classifier at all (the student's backbone
step alone, the limit of distilling from a cache; and with the teacher's backbone forward too, the limit of
distilling from a live teacher), full KD with the live teacher, DIS with the live teacher, and DIS from a teacher
cache (no teacher forward), at several image sizes and numbers of classes. Each step: forward(s), loss, backward,
AdamW on the backbone; the classifier has `RowSparseAdamW` and, on sampled steps, a sparse gradient over the sampled
rows (what `classifier_optimizer="row_sparse"` runs; full KD updates every row). Random images and labels; median
milliseconds per step; JSON lines, a Markdown table and a bar plot.

    python benchmarks/bench_step.py                       # GPU: ResNet-18 student, ResNet-50 teacher, batch 256,
                                                          # 32 and 224 px, C = 100 and 10^6, bf16 autocast
    python benchmarks/bench_step.py --device cpu --batch-size 8 --classes 100 10000 --repeats 3
    python benchmarks/bench_step.py --smoke --out /tmp/x  # tiny models, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from run_info import run_info, write_results  # noqa: E402

import hf_dis  # noqa: E402
from hf_dis.data import CachedTeacherLogits  # noqa: E402
from hf_dis.diagnostics import median_step_ms  # noqa: E402
from hf_dis.heads import RowSparseAdamW, install_sampled_head  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEMPERATURE = 2.0
METHODS = ("backbone_only", "backbones_only", "full_kd", "dis_live_teacher", "dis_cached_teacher")


def build(args: argparse.Namespace, num_classes: int, device: torch.device):
    torch.manual_seed(0)
    with device:  # made where they run: a 10^6-class classifier takes long to initialise on the CPU
        student = timm.create_model(args.student, num_classes=num_classes).train()
        teacher = timm.create_model(args.teacher, num_classes=num_classes).eval().requires_grad_(False)
    head = install_sampled_head(student)
    head.sparse_grad = True  # restricted forwards: a sparse gradient over the sampled rows
    classifier = [p for p in (head.weight, head.bias) if p is not None]
    backbone = [p for p in student.parameters() if all(p is not q for q in classifier)]
    return student, teacher, head, torch.optim.AdamW(backbone, lr=1e-4), RowSparseAdamW(classifier, lr=1e-4)


def make_step(method: str, parts, batch, sampler, args, num_classes: int):
    student, teacher, head, optimizer, classifier_optimizer = parts
    pixels, labels, cache = batch
    autocast = torch.autocast(pixels.device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            if method in ("backbone_only", "backbones_only"):
                if method == "backbones_only":  # the teacher's forward without its classifier, first as in KD
                    with torch.no_grad():
                        teacher.forward_head(teacher.forward_features(pixels), pre_logits=True)
                features = student.forward_head(student.forward_features(pixels), pre_logits=True)
                loss = features.float().square().mean()
            else:
                if method == "dis_cached_teacher":  # the cache's ranking and values on S: no top-R, no [B, C]
                    teacher_logits = CachedTeacherLogits(*cache, num_classes)
                else:
                    with torch.no_grad():
                        teacher_logits = teacher(pixels).float()
                if method == "full_kd":
                    logits = student(pixels)
                    loss = hf_dis.distillation_loss(logits, teacher_logits, labels, TEMPERATURE, 0.1).loss
                else:
                    drawn = sampler.sample(teacher_logits, labels)
                    with head.restricted_to(drawn.classes):
                        logits = student(pixels)
                    loss = hf_dis.sampled_distillation_loss(logits, teacher_logits, drawn, labels, TEMPERATURE, 0.1)
                    loss = loss.loss
        loss.backward()
        optimizer.step()
        if method not in ("backbone_only", "backbones_only"):
            classifier_optimizer.step()  # the sparse gradient's rows; every row after a full forward
        student.zero_grad(set_to_none=True)

    return step


def run(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for num_classes in args.classes:
        parts = build(args, num_classes, device)
        sampler = hf_dis.build_sampler("dis", num_classes, max(1, min(4096, num_classes // 10)), scope=args.scope)
        for size in args.image_sizes:
            generator = torch.Generator(device=device).manual_seed(0)
            pixels = torch.randn(args.batch_size, 3, size, size, device=device, generator=generator)
            labels = torch.randint(num_classes, (args.batch_size,), device=device, generator=generator)
            top_r = min(num_classes, sampler.rank_limit)
            with torch.no_grad():
                top = parts[1](pixels).float().topk(top_r, dim=1)  # a cache like cache_teacher_logits writes
            cache = (top.indices, top.values, torch.full((args.batch_size,), -10.0, device=device))
            for method in METHODS:
                milliseconds = median_step_ms(
                    make_step(method, parts, (pixels, labels, cache), sampler, args, num_classes), device, args.repeats
                )
                rows.append({"num_classes": num_classes, "image_size": size, "method": method, "ms": milliseconds})
                print(f"C={num_classes:>8} {size:>4}px {method:<20} {milliseconds:10.2f} ms")
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| C | px | method | ms / step | x full KD | / student backbone | / both backbones |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = {r["method"]: r["ms"] for r in rows
                if r["num_classes"] == row["num_classes"] and r["image_size"] == row["image_size"]}  # fmt: skip
        lines.append(
            f"| {row['num_classes']:,} | {row['image_size']} | {row['method']} | {row['ms']:.2f} | "
            f"{same['full_kd'] / row['ms']:.2f} | {row['ms'] / same['backbone_only']:.2f} | "
            f"{row['ms'] / same['backbones_only']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    settings = sorted({(row["num_classes"], row["image_size"]) for row in rows})
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(settings)), 4))
    width = 0.8 / len(METHODS)
    for offset, method in enumerate(METHODS):
        by_setting = {(r["num_classes"], r["image_size"]): r["ms"] for r in rows if r["method"] == method}
        values = [by_setting[setting] for setting in settings]
        ax.bar([i + offset * width for i in range(len(settings))], values, width, label=method)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))], [f"C={c:,}\n{px} px" for c, px in settings])
    ax.set(ylabel="ms per step", title="Whole distillation step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1_000_000])
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--scope", default="batch", choices=["batch", "per_example"])
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=torch.cuda.is_available())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="test_resnet / test_convnext, 32 px, C = 100, batch 4")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.smoke:
        args.student, args.teacher, args.classes, args.image_sizes = "test_resnet", "test_convnext", [100], [32]
        args.batch_size, args.repeats, args.bf16 = 4, 2, False
    device = torch.device(args.device)
    rows = run(args, device)
    options = ("student", "teacher", "batch_size", "scope", "bf16", "repeats")
    info = {**run_info(device), **{name: getattr(args, name) for name in options}}
    header = (
        f"Generated by `benchmarks/bench_step.py` on {info['date']}: {info['device']}, torch {info['torch']}, student "
        f"{args.student}, teacher {args.teacher}, batch {args.batch_size}, DIS {args.scope} scope with K = C / 10 "
        f"(at most 4,096), bf16 {args.bf16}, median of {args.repeats} steps."
    )
    write_results(args.out, "bench_step", info, rows, header + "\n\n" + markdown(rows))
    plot(rows, args.out / "bench_step.png")


if __name__ == "__main__":
    main()
