"""Models in the format hf_dis trains, saves and pushes: timm classifiers wrapped for transformers, the BoT
re-identification network, and the names of a classifier's classes."""

from hf_dis.models.class_names import agreed_class_names, dataset_class_names, model_class_names, set_class_names
from hf_dis.models.reid import ReIDConfig, ReIDModel, ReIDOutput
from hf_dis.models.timm_classifier import timm_classifier, timm_module, wrap_timm_model

__all__ = [
    "ReIDConfig",
    "ReIDModel",
    "ReIDOutput",
    "agreed_class_names",
    "dataset_class_names",
    "model_class_names",
    "set_class_names",
    "timm_classifier",
    "timm_module",
    "wrap_timm_model",
]
