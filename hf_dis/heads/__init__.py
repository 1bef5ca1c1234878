"""Classifier heads: split a model into features and a linear classifier, and compute logits on class subsets."""

from hf_dis.heads.split import HF_FAMILIES, SplitClassifier, split_classifier, subset_logits

__all__ = ["HF_FAMILIES", "SplitClassifier", "split_classifier", "subset_logits"]
