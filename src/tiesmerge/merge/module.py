"""Merge one module: read its factors from the adapters that hold it, merge in the chosen space,
factor the result back to LoRA, and describe what happened (a ModuleReport)."""

from __future__ import annotations

import torch

from tiesmerge.adapters.compat import ModulePlan
from tiesmerge.errors import BadInputError
from tiesmerge.merge import truncated_svd
from tiesmerge.merge.chunked import ThresholdTable
from tiesmerge.merge.core_space import core_space, from_core, from_factors
from tiesmerge.merge.job import MergeJob
from tiesmerge.merge.report import ModuleReport
from tiesmerge.merge.types import MergeStats, MethodParams, Space


def _scaled_factors(job: MergeJob, module: ModulePlan, device: torch.device, coeffs=None):
    """[c_t s_t B_t], [A_t] for the adapters holding the module (c_t = 1 unless given)."""
    bs, as_ = [], []
    for k, i in enumerate(module.members):
        reader = job.readers[i]
        a, b = reader.factors(module.name, device)
        c = 1.0 if coeffs is None else coeffs[k]
        bs.append(b * (c * reader.modules[module.name].scale))
        as_.append(a)
    return bs, as_


def linear_concat(job: MergeJob, module: ModulePlan, params: MethodParams, device: torch.device):
    """Linear methods are exactly the concatenation of the weighted, scaled factors: no dense ΔW."""
    bs, as_ = _scaled_factors(job, module, device, job.spec.coefficients(params))
    return from_factors(torch.cat(bs, 1), torch.cat(as_, 0), job.rank), None, None


def in_core_space(job: MergeJob, module: ModulePlan, params: MethodParams, device: torch.device):
    """The method applied to the K × K cores; mapped back at rank ≤ K."""
    space = core_space(*_scaled_factors(job, module, device))
    if job.spec.statistics is not None:
        merged = job.spec.statistics.core(space.cores, space.v_a, _grams(job, module, device), params)
        return from_core(space, merged, job.rank), None, None
    out = job.spec.dense(space.cores, params)
    return from_core(space, out.delta, job.rank), out.stats, None


def _grams(job: MergeJob, module: ModulePlan, device: torch.device) -> list[torch.Tensor]:
    return [job.statistics[i].gram(module.name, device) for i in module.members]


def calibrated(job: MergeJob, module: ModulePlan, params: MethodParams, device: torch.device):
    """A calibrated method (RegMean) from the factors and each adapter's input Gram: exact at rank Σ r_i."""
    b, a = job.spec.statistics.full(*_scaled_factors(job, module, device), _grams(job, module, device), params)
    return from_factors(b, a, job.rank), None, None


class ModuleCache:
    """One module's scaled factors and TIES trim thresholds, shared by every grid point of a sweep."""

    def __init__(self, job: MergeJob, module: ModulePlan, device: torch.device):
        self.job, self.plan, self.device = job, module, device
        self._factors = None
        self._table: ThresholdTable | None = None

    @property
    def factors(self):
        if self._factors is None:  # read on first use: methods that do not use the cache never read twice
            self._factors = _scaled_factors(self.job, self.plan, self.device)
        return self._factors

    @property
    def table(self) -> ThresholdTable:
        if self._table is None:
            self._table = ThresholdTable(*self.factors)
        return self._table


def in_full_space(job: MergeJob, module: ModulePlan, params: MethodParams, device: torch.device,
                  cache: ModuleCache | None = None):
    """The method applied to the dense ΔW stack, then a truncated SVD.

    A method with a factor kernel (spec.factors; TIES) never builds the stack: it forms ΔW rows chunk by chunk
    from the factors (chunked.py). With a ModuleCache (sweeps) the factors are not re-read and the trim limits
    come from its table.
    """
    spec = job.spec
    if spec.factors is not None:
        if cache is not None:
            out = spec.factors(*cache.factors, params, limits=cache.table.limits(params.densities))
        else:
            out = spec.factors(*_scaled_factors(job, module, device), params)
    else:
        deltas = torch.empty((len(module.members), module.d_out, module.d_in), dtype=torch.float32, device=device)
        for k, i in enumerate(module.members):
            reader = job.readers[i]
            a, b = reader.factors(module.name, device)
            torch.matmul(b * reader.modules[module.name].scale, a, out=deltas[k])
            del a, b
        out = spec.dense(deltas, params)
        del deltas
    merged_density = int(torch.count_nonzero(out.delta)) / max(1, out.delta.numel())
    return truncated_svd.from_dense(out.delta, job.rank), out.stats, merged_density


class NonFiniteMerge(BadInputError):
    """A module whose merge overflowed: never written as an output."""

    def __init__(self, module: str, what: str):
        super().__init__(f"module {module}: {what} — the adapters' scales × weights × lambda overflow float32; "
                         "check lora_alpha, the weights and lambda (nothing was written)")


def merge_module(job: MergeJob, module: ModulePlan, device: torch.device,
                 cache: ModuleCache | None = None) -> tuple[truncated_svd.Factorization, ModuleReport]:
    """Merge one module over the adapters that hold it and factor the result back to LoRA.
    `cache` (methods with a factor kernel) reuses the module's factors and trim limits across calls."""
    params = job.params_for(module)
    try:
        if job.recipe.space is Space.core:
            fac, stats, merged_density = in_core_space(job, module, params, device)
        elif job.spec.statistics is not None:
            fac, stats, merged_density = calibrated(job, module, params, device)
        elif job.spec.linear:
            fac, stats, merged_density = linear_concat(job, module, params, device)
        else:
            fac, stats, merged_density = in_full_space(job, module, params, device, cache)
    except torch.linalg.LinAlgError as exc:
        raise NonFiniteMerge(module.name, f"the factorization failed ({str(exc).split(':')[0]})") from None
    if not (torch.isfinite(fac.A).all() and torch.isfinite(fac.B).all()):
        raise NonFiniteMerge(module.name, "the merged factors are NaN or infinite")
    stats = stats or MergeStats()
    report = ModuleReport(
        name=module.name,
        d_out=module.d_out,
        d_in=module.d_in,
        n_adapters=len(module.members),
        rank=fac.rank,
        retained_energy=fac.retained_energy,
        rel_frobenius_error=fac.rel_error,
        sign_conflict_rate=stats.sign_conflict_rate,
        kept_density=stats.kept_density,
        merged_density=merged_density,
        delta_norm=fac.delta_norm,
    )
    return fac, report
