"""Classifier heads: split a model into features and a linear classifier, and compute logits on class subsets."""

from hf_dis.heads.sampled_linear import SampledLinear, install_sampled_head
from hf_dis.heads.split import HF_FAMILIES, SplitClassifier, split_classifier, subset_logits

__all__ = [
    "HF_FAMILIES",
    "SampledLinear",
    "SplitClassifier",
    "install_sampled_head",
    "split_classifier",
    "subset_logits",
]
