"""What a merge method is: everything method-specific lives in its MethodSpec, so the merge driver, the
sweep, the recipe and the demo never test a method's name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from tiesmerge.extras import Extra
from tiesmerge.merge.params import ParamDef
from tiesmerge.merge.types import MergeOutput, Method, MethodParams, Space

DenseFn = Callable[[torch.Tensor, MethodParams], MergeOutput]  # the method on a stack of dense ΔW (or cores)
# The same method from each adapter's scaled factors (B_t · s_t, A_t) in bounded memory, never stacking ΔW;
# `limits` are precomputed trim limits (a sweep's ThresholdTable) or None.
FactorFn = Callable[..., MergeOutput]


@dataclass(frozen=True)
class StatisticsKernels:
    """A calibrated method's kernels, which read each adapter's input statistics (`tiesmerge calibrate`):
    `full`(scaled Bs, As, Grams, params) → (B, A) of the merged ΔW; `core`(cores, Q_A, Grams, params) → merged core."""

    full: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    core: Callable[..., torch.Tensor]
    inputs: str = "specialist"  # which statistics it reads (merge/statistics.py StatisticsMeta.inputs)


# Checks a method makes at recipe load beyond the shared field ranges: (parameters, every density given) → None,
# raising ValueError with a one-line reason.
Check = Callable[[object, Sequence[float]], None]


@dataclass(frozen=True)
class MethodSpec:
    method: Method
    dense: DenseFn
    summary: str
    reference: str
    parameters: tuple[ParamDef, ...]  # what the method reads (declared in params.py or the method's file);
    # any other given parameter is refused at load
    default_normalize: bool = False  # used when a recipe leaves `normalize` unset
    coefficients: Callable[[MethodParams], tuple[float, ...]] | None = None  # linear: Σ c_i ΔW_i, exact by concat
    factors: FactorFn | None = None  # full space straight from the LoRA factors (chunked, bounded memory)
    lambda_commutes: bool = True  # merge(λ) = λ · merge(1): a sweep shares one merge + SVD across λ values
    spaces: frozenset[Space] = field(default_factory=lambda: frozenset(Space))
    extra: Extra | None = None  # an optional install the method needs (its kernel is another library's)
    check: Check | None = None
    statistics: StatisticsKernels | None = None  # calibrated: needs each adapter's statistics file

    @property
    def linear(self) -> bool:
        return self.coefficients is not None

    @property
    def native(self) -> bool:
        return self.extra is None

    @property
    def runs(self) -> str:
        """How it runs, for `tiesmerge methods` and plans."""
        how = "native" if self.native else f"{self.extra.value} kernel"
        if self.linear:
            how += ", exact concat"
        if self.factors is not None:
            how += ", chunked from factors"
        if self.statistics is not None:
            how += ", needs calibration statistics"
        return how

    def resolve_normalize(self, given: bool | None) -> bool:
        return self.default_normalize if given is None else given
