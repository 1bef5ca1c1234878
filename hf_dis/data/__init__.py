"""Datasets and transforms: CIFAR-100, Market-1501, the rendered-glyph benchmark, and model-matched transforms."""

from hf_dis.data.cifar100 import load_cifar100
from hf_dis.data.glyphs import charset_code_points, load_glyphs, render_glyph
from hf_dis.data.market1501 import load_market1501
from hf_dis.data.transforms import data_config, image_transform, labelled_batches

__all__ = [
    "charset_code_points",
    "data_config",
    "image_transform",
    "labelled_batches",
    "load_cifar100",
    "load_glyphs",
    "load_market1501",
    "render_glyph",
]
