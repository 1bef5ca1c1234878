"""Datasets and transforms: CIFAR-100, Market-1501, the rendered-glyph benchmark, model-matched transforms, and the
re-ID pieces (P x K identity sampler, query/gallery evaluation set), the teacher cache, and any image dataset a user
names (`load_image_dataset`)."""

from hf_dis.data.cached_logits import CachedTeacherLogits, dense_teacher_logits
from hf_dis.data.cifar100 import load_cifar100
from hf_dis.data.glyphs import FACE_SETS, charset_code_points, load_glyphs, render_glyph
from hf_dis.data.identity_sampler import IdentitySampler
from hf_dis.data.image_datasets import load_image_dataset
from hf_dis.data.market1501 import load_market1501
from hf_dis.data.reid import REID_EVAL_KEYS, reid_eval_batches, reid_eval_dataset
from hf_dis.data.teacher_cache import (
    TEACHER_CACHE_COLUMNS,
    cache_teacher_logits,
    seeded_view,
    teacher_cache_info,
)
from hf_dis.data.transforms import (
    data_config,
    image_transform,
    labelled_batches,
    labelled_dataset,
    padded_crop_transform,
    timm_image_processor,
)

__all__ = [
    "FACE_SETS",
    "CachedTeacherLogits",
    "TEACHER_CACHE_COLUMNS",
    "REID_EVAL_KEYS",
    "IdentitySampler",
    "cache_teacher_logits",
    "charset_code_points",
    "data_config",
    "dense_teacher_logits",
    "image_transform",
    "labelled_batches",
    "labelled_dataset",
    "load_cifar100",
    "load_glyphs",
    "load_image_dataset",
    "load_market1501",
    "padded_crop_transform",
    "seeded_view",
    "teacher_cache_info",
    "timm_image_processor",
    "reid_eval_batches",
    "reid_eval_dataset",
    "render_glyph",
]
