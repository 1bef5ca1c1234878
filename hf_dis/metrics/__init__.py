"""Metrics: top-k accuracy and re-identification (CMC, mAP, mINP) as plain functions, and the same as `evaluate`
modules shipped in the package (`load("topk_accuracy")`, `load("reid")`), which load offline by path."""

from __future__ import annotations

from pathlib import Path

from hf_dis.metrics.accuracy import classification_metrics, top_classes_for_metrics, topk_accuracy
from hf_dis.metrics.reid import reid_eval_metrics, reid_metrics, reid_metrics_from_features

MODULES = Path(__file__).resolve().parent / "modules"


def available() -> list[str]:
    return sorted(path.name for path in MODULES.iterdir() if (path / f"{path.name}.py").is_file())


def metric_info(description: str, citation: str, inputs_description: str, features):
    """The `evaluate.MetricInfo` of one of this package's modules."""
    import evaluate

    return evaluate.MetricInfo(
        description=description, citation=citation, inputs_description=inputs_description, features=features
    )


def load(name: str, **kwargs):
    """`evaluate.load` of one of this package's metric modules (by path: works offline)."""
    import evaluate

    if name not in available():
        raise ValueError(f"Unknown metric {name!r}; choose one of {available()}.")
    return evaluate.load(str(MODULES / name / f"{name}.py"), **kwargs)


__all__ = [
    "available",
    "classification_metrics",
    "load",
    "metric_info",
    "reid_eval_metrics",
    "reid_metrics",
    "reid_metrics_from_features",
    "top_classes_for_metrics",
    "topk_accuracy",
]
