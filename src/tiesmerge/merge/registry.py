"""The one table of merge methods: name → function, parameters, and whether it is linear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from tiesmerge.merge.methods import mergekit_family, task_arithmetic, ties
from tiesmerge.merge.types import MergeOutput, Method, MethodParams

MergeFn = Callable[[torch.Tensor, MethodParams], MergeOutput]


@dataclass(frozen=True)
class MethodSpec:
    method: Method
    fn: MergeFn
    summary: str
    reference: str
    parameters: tuple[str, ...]  # recipe `parameters` keys this method reads
    native: bool  # False: the ΔW stack goes through mergekit's merge_tensors
    coefficients: Callable[[MethodParams], tuple[float, ...]] | None = None  # set for linear methods
    default_normalize: bool = False

    @property
    def linear(self) -> bool:
        return self.coefficients is not None


_COMMON = ("lambda", "normalize")

REGISTRY: Mapping[Method, MethodSpec] = {
    Method.ties: MethodSpec(
        Method.ties, ties.ties,
        "TIES: trim to density, elect sign (sum|count), mean of agreeing entries, × λ",
        "https://arxiv.org/abs/2306.01708", ("density", "sign", *_COMMON), native=True, default_normalize=True,
    ),
    Method.task_arithmetic: MethodSpec(
        Method.task_arithmetic, task_arithmetic.task_arithmetic,
        "Task arithmetic: λ · Σ w_i ΔW_i (exact at rank Σ r_i by concatenation)",
        "https://arxiv.org/abs/2212.04089", _COMMON, native=True,
        coefficients=task_arithmetic.coefficients,
    ),
    Method.dare_ties: MethodSpec(
        Method.dare_ties, mergekit_family.bind(Method.dare_ties),
        "DARE + TIES: random drop to density with rescale, then sign election",
        "https://arxiv.org/abs/2311.03099", ("density", "rescale", "seed", *_COMMON), native=False,
    ),
    Method.dare_linear: MethodSpec(
        Method.dare_linear, mergekit_family.bind(Method.dare_linear),
        "DARE: random drop to density with rescale, then weighted sum",
        "https://arxiv.org/abs/2311.03099", ("density", "rescale", "seed", *_COMMON), native=False,
    ),
    Method.breadcrumbs: MethodSpec(
        Method.breadcrumbs, mergekit_family.bind(Method.breadcrumbs),
        "Model Breadcrumbs: drop the largest gamma and the smallest entries, weighted sum",
        "https://arxiv.org/abs/2312.06795", ("density", "gamma", *_COMMON), native=False,
    ),
    Method.breadcrumbs_ties: MethodSpec(
        Method.breadcrumbs_ties, mergekit_family.bind(Method.breadcrumbs_ties),
        "Model Breadcrumbs with TIES sign election",
        "https://arxiv.org/abs/2312.06795", ("density", "gamma", *_COMMON), native=False,
    ),
    Method.della: MethodSpec(
        Method.della, mergekit_family.bind(Method.della),
        "DELLA: magnitude-ranked random drop (± epsilon), rescale, sign election",
        "https://arxiv.org/abs/2406.11617", ("density", "epsilon", "rescale", "seed", *_COMMON), native=False,
        default_normalize=True,
    ),
    Method.della_linear: MethodSpec(
        Method.della_linear, mergekit_family.bind(Method.della_linear),
        "DELLA without sign election (weighted sum)",
        "https://arxiv.org/abs/2406.11617", ("density", "epsilon", "rescale", "seed", *_COMMON), native=False,
    ),
    Method.magnitude_prune: MethodSpec(
        Method.magnitude_prune, mergekit_family.bind(Method.magnitude_prune),
        "Magnitude pruning: keep the largest-|ΔW| density fraction of each adapter, weighted sum",
        "https://arxiv.org/abs/2306.01708", ("density", *_COMMON), native=False,
    ),
}


def get(method: Method) -> MethodSpec:
    return REGISTRY[Method(method)]
