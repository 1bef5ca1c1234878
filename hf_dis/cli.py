"""The `hf-dis` command: the recipes of `hf_dis.recipes` and the Hub tools of `hf_dis.hub` as subcommands
(`hf-dis --help` lists them)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

OVERVIEW = """\
usage: hf-dis COMMAND [OPTIONS]

Distil large image models into small ones on the Hugging Face Trainer, with the KD loss over the classes that
dynamic importance sampling (DIS) draws. Every command runs on one device with `hf-dis ...`, or on several with
`accelerate launch $(which hf-dis) ...`; `hf-dis COMMAND --help` lists all of its options. Errors are one line;
HF_DIS_DEBUG=1 shows their tracebacks.

commands:
  train-teacher          train a teacher: --task classification (CIFAR-100, glyphs) or --task reid
                         (Market-1501, glyphs)
  distill cifar100       distil a classifier with the CIFAR-100 KD recipe (240 epochs, SGD, T = 4)
  distill market1501     distil a re-ID model with the BoT recipe (P x K batches, triplet, Adam)
  evaluate               evaluate a saved model (top-1/top-5, or rank-1/5/10, mAP and mINP)
  render-glyphs          render a glyph task and save it, for machines without the fonts (--data_dir)
  cache-teacher          run a teacher once over a training set and save its logits (distill --teacher_cache)
  card OUTPUT_DIR        (re)write a distilled student's model card (README.md) from its run's data
  push OUTPUT_DIR --repo_id NAME
                         upload a distilled student (model, card, results) to the Hugging Face Hub

try it here (no download: --dataset glyphs renders characters from this machine's fonts):
  hf-dis train-teacher --dataset glyphs --glyph_classes 200 --num_train_epochs 3 --output_dir runs/teacher
  hf-dis distill cifar100 --dataset glyphs --glyph_classes 200 --num_train_epochs 3 \\
      --teacher_model runs/teacher --output_dir runs/student
  hf-dis evaluate --model runs/student --dataset glyphs --glyph_classes 200
"""


def _card(argv: Sequence[str]) -> None:
    from hf_dis.hub import write_card

    parser = argparse.ArgumentParser(
        prog="hf-dis card",
        description="Write OUTPUT_DIR/README.md, the model card of "
        "the student a DistillationTrainer saved there, from its distillation_card.json.",
    )
    parser.add_argument("output_dir", help="the run's output folder")
    parser.add_argument("--repo_id", "--repo-id", default=None, help="the Hub repo the card's usage snippet names")
    options = parser.parse_args(argv)
    try:
        path = write_card(options.output_dir, options.repo_id)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(1, f"hf-dis card: {error}\n")
    print(f"wrote {path}")


def _push(argv: Sequence[str]) -> None:
    from hf_dis.hub import push_student

    parser = argparse.ArgumentParser(
        prog="hf-dis push",
        description="Upload the student a DistillationTrainer saved in "
        "OUTPUT_DIR (model, card, results; not the checkpoints) to a Hub repo, in one "
        "commit. Credentials: `hf auth login`, HF_TOKEN, or --token.",
    )
    parser.add_argument("output_dir", help="the run's output folder")
    parser.add_argument(
        "--repo_id", "--repo-id", required=True, help="owner/name of the model repo (created if missing)"
    )
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--token", default=None, help="a Hub token with write access (default: the logged-in one)")
    options = parser.parse_args(argv)
    try:
        commit = push_student(
            options.output_dir,
            options.repo_id,
            private=options.private or None,
            token=options.token,
            revision=options.revision,
        )
    except (FileNotFoundError, ConnectionError, ValueError) as error:
        parser.exit(1, f"hf-dis push: {error}\n")  # the message says what to do; a traceback would bury it
    print(f"pushed to {commit.commit_url}")


#: The recipe behind each command: a module of `hf_dis.recipes` with `main(argv)` and `parse_args(argv)`.
RECIPE_MODULES = {
    "train-teacher": "train_teacher",
    "distill cifar100": "distill_cifar100",
    "distill market1501": "distill_market1501",
    "evaluate": "evaluate",
    "render-glyphs": "render_glyphs",
    "cache-teacher": "cache_teacher",
}


def _command(name: str) -> Callable[[Sequence[str]], object]:
    """The function behind a command, importing only its own recipe (torch and transformers load in seconds)."""
    if name in RECIPE_MODULES:
        return importlib.import_module(f"hf_dis.recipes.{RECIPE_MODULES[name]}").main
    return {"card": _card, "push": _push}[name]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(OVERVIEW)
        return 0 if argv else 2
    words = 2 if argv[0] == "distill" else 1
    command = " ".join(argv[:words])
    if command not in (*RECIPE_MODULES, "card", "push"):
        if argv[0] == "distill":
            message = "distill needs a recipe: hf-dis distill cifar100 ... or hf-dis distill market1501 ..."
        else:
            names = "train-teacher, distill, evaluate, render-glyphs, cache-teacher, card, push"
            message = f"unknown command {argv[0]!r}; the commands are {names}."
        print(f"hf-dis: {message} (hf-dis --help shows them)", file=sys.stderr)
        return 2
    sys.argv[0] = f"hf-dis {command}"  # argparse names the program in usage and errors
    try:
        _command(command)(argv[words:])
    except (ValueError, OSError, TypeError, KeyError, MemoryError) as error:
        if os.environ.get("HF_DIS_DEBUG"):
            raise
        # A user's mistake (an option, a folder, a dataset) says what to do in its message: one line, no traceback.
        print(f"hf-dis {command}: error: {error}\n(set HF_DIS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
