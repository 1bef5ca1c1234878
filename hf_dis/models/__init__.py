"""Models in the format hf_dis trains, saves and pushes: timm classifiers wrapped for transformers, and the BoT
re-identification network."""

from hf_dis.models.reid import ReIDConfig, ReIDModel, ReIDOutput
from hf_dis.models.timm_classifier import timm_classifier, wrap_timm_model

__all__ = ["ReIDConfig", "ReIDModel", "ReIDOutput", "timm_classifier", "wrap_timm_model"]
