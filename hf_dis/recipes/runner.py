"""The end of every recipe: train (resuming when asked), save the model, evaluate the last epoch's weights, and write
the metrics as JSON beside the checkpoints."""

from __future__ import annotations

from transformers import Trainer


def train_and_report(trainer: Trainer) -> dict[str, float]:
    """Train, save the model to `output_dir`, evaluate, and write `train_results.json` / `eval_results.json` (and
    `all_results.json`) there; returns the evaluation metrics. The metrics are the last epoch's, not the best's."""
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics
