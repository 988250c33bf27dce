"""The one table of merge methods. Adding a method: one file in methods/ and one row here."""

from __future__ import annotations

from typing import Mapping

from tiesmerge.extras import Extra
from tiesmerge.merge.chunked import ties_from_factors
from tiesmerge.merge.methods import iso_c, iso_cts, knots, mergekit_family, regmean, task_arithmetic, ties, tsv
from tiesmerge.merge.params import CORE, DENSITY, EPSILON, GAMMA, LAMBDA, NORMALIZE, RESCALE, SEED, SIGN, ParamDef
from tiesmerge.merge.spec import MethodSpec, StatisticsKernels
from tiesmerge.merge.types import Method

_COMMON = (LAMBDA, NORMALIZE)
_RANDOM = (DENSITY, RESCALE, SEED, *_COMMON)
_MK = {"extra": Extra.mergekit}

REGISTRY: Mapping[Method, MethodSpec] = {
    Method.ties: MethodSpec(
        Method.ties, ties.ties,
        "TIES: trim to density, elect sign (sum|count), mean of agreeing entries, × λ",
        "https://arxiv.org/abs/2306.01708", (DENSITY, SIGN, *_COMMON),
        default_normalize=True, factors=ties_from_factors,
    ),
    Method.task_arithmetic: MethodSpec(
        Method.task_arithmetic, task_arithmetic.task_arithmetic,
        "Task arithmetic: λ · Σ w_i ΔW_i (exact at rank Σ r_i by concatenation)",
        "https://arxiv.org/abs/2212.04089", _COMMON, coefficients=task_arithmetic.coefficients,
    ),
    Method.dare_ties: MethodSpec(
        Method.dare_ties, mergekit_family.bind(Method.dare_ties),
        "DARE + TIES: random drop to density with rescale, then sign election",
        "https://arxiv.org/abs/2311.03099", _RANDOM, **_MK,
    ),
    Method.dare_linear: MethodSpec(
        Method.dare_linear, mergekit_family.bind(Method.dare_linear),
        "DARE: random drop to density with rescale, then weighted sum",
        "https://arxiv.org/abs/2311.03099", _RANDOM, **_MK,
    ),
    Method.breadcrumbs: MethodSpec(
        Method.breadcrumbs, mergekit_family.bind(Method.breadcrumbs),
        "Model Breadcrumbs: drop the largest gamma and the smallest entries, weighted sum",
        "https://arxiv.org/abs/2312.06795", (DENSITY, GAMMA, *_COMMON), **_MK,
    ),
    Method.breadcrumbs_ties: MethodSpec(
        Method.breadcrumbs_ties, mergekit_family.bind(Method.breadcrumbs_ties),
        "Model Breadcrumbs with TIES sign election",
        "https://arxiv.org/abs/2312.06795", (DENSITY, GAMMA, *_COMMON), **_MK,
    ),
    Method.della: MethodSpec(
        Method.della, mergekit_family.bind(Method.della),
        "DELLA: magnitude-ranked random drop (± epsilon), rescale, sign election",
        "https://arxiv.org/abs/2406.11617", (EPSILON, *_RANDOM), default_normalize=True,
        check=mergekit_family.della_check, **_MK,
    ),
    Method.della_linear: MethodSpec(
        Method.della_linear, mergekit_family.bind(Method.della_linear),
        "DELLA without sign election (weighted sum)",
        "https://arxiv.org/abs/2406.11617", (EPSILON, *_RANDOM), check=mergekit_family.della_check, **_MK,
    ),
    Method.magnitude_prune: MethodSpec(
        Method.magnitude_prune, mergekit_family.bind(Method.magnitude_prune),
        "Magnitude pruning: keep the largest-|ΔW| density fraction of each adapter, weighted sum",
        "https://arxiv.org/abs/2306.01708", (DENSITY, *_COMMON), **_MK,
    ),
    Method.tsv: MethodSpec(
        Method.tsv, tsv.tsv,
        "TSV-M: each task's top singular directions, decorrelated across tasks (polar factors), × λ",
        "https://arxiv.org/abs/2412.00081", (LAMBDA,),
    ),
    Method.iso_c: MethodSpec(
        Method.iso_c, iso_c.iso_c,
        "Iso-C: the summed update with a flat spectrum (every singular value = their mean), × λ",
        "https://arxiv.org/abs/2502.04959", (LAMBDA,),
    ),
    Method.iso_cts: MethodSpec(
        Method.iso_cts, iso_cts.iso_cts,
        "Iso-CTS: a common subspace plus each task's own directions, orthonormalised, flat spectrum, × λ",
        "https://arxiv.org/abs/2502.04959", (iso_cts.COMMON_FRACTION, LAMBDA),
    ),
    Method.knots_ties: MethodSpec(
        Method.knots_ties, knots.knots_ties,
        "KnOTS-TIES: align the updates by one joint SVD, TIES on each task's aligned representation, × λ",
        "https://arxiv.org/abs/2410.19735", (DENSITY, SIGN, *_COMMON), default_normalize=True,
    ),
    Method.knots_dare: MethodSpec(
        Method.knots_dare, knots.knots_dare,
        "KnOTS-DARE: joint-SVD alignment, DARE drop with rescale, sign election, disjoint mean, × λ",
        "https://arxiv.org/abs/2410.19735", (DENSITY, SIGN, RESCALE, SEED, *_COMMON),
        default_normalize=True,
    ),
    Method.knots_linear: MethodSpec(
        Method.knots_linear, knots.knots_linear,
        "KnOTS-linear: joint-SVD alignment, weighted sum (equals task arithmetic without normalize)",
        "https://arxiv.org/abs/2410.19735", (LAMBDA,),
    ),
    Method.regmean: MethodSpec(
        Method.regmean, regmean.needs_statistics,
        "RegMean: per layer, the least-squares ΔW on each adapter's own inputs (calibrated), exact at rank Σ r_i",
        "https://arxiv.org/abs/2212.09849", (regmean.OFF_DIAGONAL, LAMBDA), lambda_commutes=True,
        statistics=StatisticsKernels(regmean.regmean_factors, regmean.regmean_core),
    ),
    Method.regmean_pp: MethodSpec(
        Method.regmean_pp, regmean.needs_statistics,
        "RegMean++: RegMean with each block's inputs from the partially merged model (`calibrate --pp`)",
        "https://arxiv.org/abs/2508.03121", (regmean.OFF_DIAGONAL, LAMBDA), lambda_commutes=False,
        statistics=StatisticsKernels(regmean.regmean_factors, regmean.regmean_core, inputs="merged"),
    ),
}


def get(method: Method) -> MethodSpec:
    return REGISTRY[Method(method)]


def known_parameters() -> dict[str, ParamDef]:
    """Every parameter some method declares, by recipe name."""
    out = {p.name: p for p in CORE}
    for spec in REGISTRY.values():
        for p in spec.parameters:
            if out.setdefault(p.name, p) is not p:
                raise RuntimeError(f"two ParamDefs are named {p.name!r}")  # a registry bug, caught by the tests
    return out
