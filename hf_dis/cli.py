"""The `hf-dis` command: the recipes of `hf_dis.recipes` as subcommands (`hf-dis --help` lists them)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

OVERVIEW = """\
usage: hf-dis COMMAND [OPTIONS]

Distil large image models into small ones on the Hugging Face Trainer, with the KD loss over the classes that
dynamic importance sampling (DIS) draws. Every command runs on one device with `hf-dis ...`, or on several with
`accelerate launch $(which hf-dis) ...`; `hf-dis COMMAND --help` lists all of its options.

commands:
  train-teacher          train a teacher: --task classification (CIFAR-100, glyphs) or --task reid
                         (Market-1501, glyphs)
  distill cifar100       distil a classifier with the CIFAR-100 KD recipe (240 epochs, SGD, T = 4)
  distill market1501     distil a re-ID model with the BoT recipe (P x K batches, triplet, Adam)
  evaluate               evaluate a saved model (top-1/top-5, or rank-1/5/10, mAP and mINP)

try it here (no download: --dataset glyphs renders characters from this machine's fonts):
  hf-dis train-teacher --dataset glyphs --glyph_classes 200 --num_train_epochs 3 --output_dir runs/teacher
  hf-dis distill cifar100 --dataset glyphs --glyph_classes 200 --num_train_epochs 3 \\
      --teacher_model runs/teacher --output_dir runs/student
  hf-dis evaluate --model runs/student --dataset glyphs --glyph_classes 200
"""


def _recipes() -> dict[str, Callable[[Sequence[str]], dict[str, float]]]:
    from hf_dis.recipes import distill_cifar100, distill_market1501, evaluate, train_teacher

    return {
        "train-teacher": train_teacher.main,
        "distill cifar100": distill_cifar100.main,
        "distill market1501": distill_market1501.main,
        "evaluate": evaluate.main,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(OVERVIEW)
        return 0 if argv else 2
    recipes = _recipes()
    words = 2 if argv[0] == "distill" else 1
    command = " ".join(argv[:words])
    if command not in recipes:
        if argv[0] == "distill":
            message = "distill needs a recipe: hf-dis distill cifar100 ... or hf-dis distill market1501 ..."
        else:
            message = f"unknown command {argv[0]!r}; the commands are train-teacher, distill, evaluate."
        print(f"hf-dis: {message} (hf-dis --help shows them)", file=sys.stderr)
        return 2
    sys.argv[0] = f"hf-dis {command}"  # argparse names the program in usage and errors
    recipes[command](argv[words:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
