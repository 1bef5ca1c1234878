"""Class samplers: which classes the sampled KD loss looks at, with exact inclusion probabilities.

Importing this package registers the five built-in samplers.

`build_sampler(name, num_classes, num_sampled, **options)` with name one of full, uniform, topk, ftis, dis.
"""

from hf_dis.sampling.base import ClassSampler, SampledClasses
from hf_dis.sampling.dis import DISSampler
from hf_dis.sampling.ftis import FTISSampler
from hf_dis.sampling.full import FullSampler
from hf_dis.sampling.laplace import LaplaceMixture, fit_laplace_mixture
from hf_dis.sampling.options import SCOPES
from hf_dis.sampling.registry import build_sampler, list_samplers, register_sampler
from hf_dis.sampling.topk import TopKSampler
from hf_dis.sampling.uniform import UniformSampler

__all__ = [
    "SCOPES",
    "ClassSampler",
    "DISSampler",
    "FTISSampler",
    "FullSampler",
    "LaplaceMixture",
    "SampledClasses",
    "TopKSampler",
    "UniformSampler",
    "build_sampler",
    "fit_laplace_mixture",
    "list_samplers",
    "register_sampler",
]
