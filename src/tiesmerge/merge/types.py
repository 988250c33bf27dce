"""Names and per-module parameters shared by the merge methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

import torch


class Method(str, Enum):
    ties = "ties"
    task_arithmetic = "task_arithmetic"
    dare_ties = "dare_ties"
    dare_linear = "dare_linear"
    breadcrumbs = "breadcrumbs"
    breadcrumbs_ties = "breadcrumbs_ties"
    della = "della"
    della_linear = "della_linear"
    magnitude_prune = "magnitude_prune"
    tsv = "tsv"
    iso_c = "iso_c"
    iso_cts = "iso_cts"
    knots_ties = "knots_ties"
    knots_dare = "knots_dare"
    knots_linear = "knots_linear"
    regmean = "regmean"
    regmean_pp = "regmean_pp"


class Space(str, Enum):
    """Where a method is applied."""

    full = "full"  # on the dense ΔW_i (d_out × d_in)
    core = "core"  # on the K × K cores of a shared orthonormal basis (no dense matrix; Panariello et al. 2025)


class RankMode(str, Enum):
    """How the output rank of each module is chosen."""

    fixed = "int"  # one rank for every module (truncated SVD), capped at the module's size
    auto = "auto"  # the smallest rank keeping `energy` of ‖ΔW‖²_F, per module
    full = "full"  # lossless


class SvdMode(str, Enum):
    auto = "auto"  # exact below EXACT_SVD_MAX_DIM, randomized above
    exact = "exact"
    randomized = "randomized"


class SignRule(str, Enum):
    """How TIES elects the sign of each entry."""

    sum = "sum"  # sign of the summed (trimmed, weighted) deltas: the paper's mass rule
    count = "count"  # majority vote of the signs


@dataclass(frozen=True)
class MethodParams:
    """Everything a method needs for one module, resolved for the adapters that hold it."""

    weights: tuple[float, ...]
    densities: tuple[float, ...]
    lam: float = 1.0
    sign: SignRule = SignRule.sum
    normalize: bool | None = None  # None: the method's own default
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)  # the method's other parameters, by recipe name

    def option(self, definition) -> Any:
        """The value of a method's own parameter (a params.ParamDef): as given, or its declared default."""
        return self.options.get(definition.name, definition.default)


@dataclass
class MergeStats:
    """What a method reports about one module's merge (None where it does not apply)."""

    kept_density: float | None = None  # share of entries kept by the trim, mean over adapters
    sign_conflict_rate: float | None = None  # share of kept entries disagreeing with the elected sign


@dataclass
class MergeOutput:
    delta: torch.Tensor
    stats: MergeStats
