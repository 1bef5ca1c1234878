"""The end of every recipe: train (resuming when asked), evaluate the last epoch's weights, write the metrics as
JSON beside the checkpoints, write a distilled student's model card, and save the model (which pushes it, card
included, with --push_to_hub)."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from hf_dis.trainer import DistillationTrainer


def train_and_report(
    trainer: Trainer, dataset_name: str | None = None, final_eval_dataset: Any = None
) -> dict[str, float]:
    """Train, evaluate (on `final_eval_dataset`, default the trainer's), write `train_results.json` /
    `eval_results.json` (and `all_results.json`) in `output_dir`, the card of a `DistillationTrainer`'s student
    (naming `dataset_name`), then save the model there; returns the evaluation metrics. The metrics are the last
    epoch's, not the best's."""
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    metrics = trainer.evaluate(final_eval_dataset)
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if isinstance(trainer, DistillationTrainer):
        trainer.create_model_card(dataset=dataset_name)
    trainer.save_model()
    return metrics
