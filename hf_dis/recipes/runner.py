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
    if trainer.is_world_process_zero():
        print(run_summary(trainer.args.output_dir, result.metrics, metrics, isinstance(trainer, DistillationTrainer)))
    return metrics


def run_summary(output_dir: str, train_metrics: dict[str, Any], eval_metrics: dict[str, float], card: bool) -> str:
    """The few lines a run ends with: where the model is, its final metrics and training time, what to do next."""
    named = {key.removeprefix("eval_"): value for key, value in eval_metrics.items() if isinstance(value, float)}
    shown = [f"{name} {100 * named[name]:.2f}%" for name in ("accuracy", "top5", "rank1", "mAP") if name in named]
    minutes = train_metrics.get("train_runtime", 0.0) / 60
    lines = [
        f"\nDone: {output_dir}",
        f"  last epoch's evaluation: {', '.join(shown) or 'no metric'}; trained in {minutes:.1f} min",
        f"  evaluate it again:  hf-dis evaluate --model {output_dir} (with the data options of this run)",
    ]
    if card:
        lines.append(f"  publish it:  hf-dis push {output_dir} --repo_id USER/NAME  (README.md is its card)")
    return "\n".join(lines)
