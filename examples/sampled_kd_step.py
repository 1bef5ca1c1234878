"""The sampled-KD step by hand, with the public API: what `DistillationTrainer` will do for you.

A timm ResNet-18 student learns from a ResNet-34 teacher over 1,000 classes on random tensors (this shows the calls
and shapes, not a training recipe: the recipes are in the other examples). Every `refit_every` steps (and at step 0)
DIS needs a full-distillation probe: that step uses the full KD loss, and its logits feed the sampler.

    python examples/sampled_kd_step.py --steps 4
"""

from __future__ import annotations

import argparse

import timm
import torch

import hf_dis
from hf_dis.heads import install_sampled_head


def distillation_step(student, head, teacher, sampler, pixel_values, labels, step, temperature=2.0, alpha=0.1):
    """One step's loss: full KD on DIS's probe steps (whose logits the sampler learns from), else sampled KD with the
    student's `head` (from `install_sampled_head`) restricted to the drawn classes."""
    with torch.no_grad():
        teacher_logits = teacher(pixel_values)
    probe = sampler.refit_every is not None and step % sampler.refit_every == 0
    if probe:  # full distillation: the B x C student logits are formed on this step only
        student_logits = student(pixel_values)
        sampler.update(teacher_logits, student_logits, temperature)
        parts = hf_dis.distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)
    else:
        drawn = sampler.sample(teacher_logits, labels)
        with head.restricted_to(drawn.classes):  # the model's own forward, its head on S: never B x C
            student_S = student(pixel_values)
        parts = hf_dis.sampled_distillation_loss(student_S, teacher_logits, drawn, labels, temperature, alpha)
    return parts.loss, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--num-sampled", type=float, default=0.05, help="K, or a fraction of the classes")
    parser.add_argument("--sampler", default="dis", choices=hf_dis.list_samplers())
    parser.add_argument("--scope", default="batch", choices=["per_example", "batch"])
    args = parser.parse_args()

    torch.manual_seed(0)
    student = timm.create_model("resnet18", num_classes=args.num_classes)
    head = install_sampled_head(student)  # in place, sharing the classifier's parameters
    teacher = timm.create_model("resnet34", num_classes=args.num_classes).eval().requires_grad_(False)
    num_sampled = None if args.sampler == "full" else args.num_sampled
    options = {}
    if args.sampler == "dis":
        options["refit_every"] = 2  # probe often in this short demo (default 50)
    if args.sampler in ("ftis", "topk"):
        options["proposal_temperature"] = 2.0  # the distillation temperature, as DistillationArguments' default
    sampler = hf_dis.build_sampler(args.sampler, args.num_classes, num_sampled, scope=args.scope, seed=0, **options)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    for step in range(args.steps):
        pixel_values = torch.randn(8, 3, 32, 32)
        labels = torch.randint(args.num_classes, (8,))
        loss, probe = distillation_step(student, head, teacher, sampler, pixel_values, labels, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step}: loss {loss.item():.4f}{' (full-KD probe)' if probe else ''}")
    print("sampler state:", {k: v for k, v in sampler.state_dict().items() if k in ("mixture", "num_updates")})


if __name__ == "__main__":
    main()
