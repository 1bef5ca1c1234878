"""Classifier heads: split a model into features and a linear classifier, compute logits on class subsets, and
update only the classifier rows a step touched (row-sparse optimizers)."""

from hf_dis.heads.row_sparse import RowSparseAdamW, RowSparseSGD
from hf_dis.heads.sampled_linear import SampledLinear, install_sampled_head
from hf_dis.heads.split import HF_HEAD_PATHS, SplitClassifier, split_classifier, subset_logits

__all__ = [
    "HF_HEAD_PATHS",
    "RowSparseAdamW",
    "RowSparseSGD",
    "SampledLinear",
    "SplitClassifier",
    "install_sampled_head",
    "split_classifier",
    "subset_logits",
]
