"""Evaluate a saved model (a recipe's --output_dir, or any transformers image classifier) on a dataset: top-1 / top-5
for classifiers, rank-1/5/10, mAP and mINP (Market-1501 protocol) for re-ID models.

    hf-dis evaluate --model runs/c100-resnet18-dis --dataset cifar100
    hf-dis evaluate --model runs/market-resnet18-dis --dataset market1501 --data_dir /data/Market-1501-v15.09.15
    hf-dis evaluate --model runs/glyph-student --dataset glyphs --glyph_classes 200 --output_dir runs/glyph-eval
    hf-dis evaluate --model runs/digits-student --dataset ./digits     # your own: an image folder, a saved dataset
                                                                      # or a Hub id (columns image and label)

Pass the same data options (glyph_classes, image_size, ...) the model was trained with. With --output_dir, the
metrics are also written there as eval_results.json.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from hf_dis.metrics import classification_metrics, top_classes_for_metrics
from hf_dis.models import ReIDModel
from hf_dis.recipes.data import DataArguments, classification_splits, load_splits, reid_splits
from hf_dis.recipes.models import ModelOptions, normalisation
from hf_dis.recipes.parsing import parse_recipe_args
from hf_dis.trainer import ReIDTrainer, ReIDTrainingArguments, load_teacher


@dataclass
class EvaluateArguments(ModelOptions):
    """What to evaluate.

    Args:
        model: The model: a directory saved by a recipe (or save_pretrained), or a Hub id.
        batch_size: Images per forward pass (per device).
        output_dir: Where to write eval_results.json; unset: only print the metrics.
        image_size: see `ModelOptions` (pretrained is not used).
    """

    model: str | None = field(
        default=None,
        metadata={"help": "The model: a directory saved by a recipe (or save_pretrained), or a Hub id."},
    )
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass (per device)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where to write eval_results.json; unset: only print the metrics."}
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[EvaluateArguments, DataArguments]:
    """The options from `argv` (default: the command line): flags or one YAML / JSON file."""
    return parse_recipe_args((EvaluateArguments,), DataArguments, argv, __doc__)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the evaluation on `argv` (default: the command line); returns the metrics."""
    options, data = parse_args(argv)
    if options.model is None:
        raise ValueError("pass the model to evaluate: --model DIRECTORY (or a Hub id).")
    model = load_teacher(options.model, role="model", passed_as="--model")  # a clear error when the Hub is unreachable
    task = "reid" if isinstance(model, ReIDModel) else "classification"
    splits = load_splits(data, task)
    size = options.input_size(data, task)
    with tempfile.TemporaryDirectory() as scratch:
        settings = dict(
            output_dir=options.output_dir or scratch,
            per_device_eval_batch_size=options.batch_size,
            remove_unused_columns=False,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
        )
        if task == "reid":
            _, evaluation = reid_splits(splits, data, normalisation(model, options.model), size)
            trainer = ReIDTrainer(model=model, args=ReIDTrainingArguments(**settings))
        else:
            _, evaluation = classification_splits(splits, data, normalisation(model, options.model), size)
            trainer = Trainer(
                model=model,
                args=TrainingArguments(**settings),
                compute_metrics=classification_metrics,
                preprocess_logits_for_metrics=top_classes_for_metrics,
            )
        metrics = trainer.evaluate(evaluation)
        trainer.log_metrics("eval", metrics)
        if options.output_dir is not None:
            trainer.save_metrics("eval", metrics, combined=False)
    return metrics


if __name__ == "__main__":
    main()
