"""Per-module merge report and its summary (written as merge_report.json)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Sequence


@dataclass(frozen=True)
class ModuleReport:
    name: str
    d_out: int
    d_in: int
    n_adapters: int
    rank: int
    retained_energy: float  # Σσ²(kept) / ‖ΔW‖²_F
    rel_frobenius_error: float  # ‖ΔW − B′A′‖_F / ‖ΔW‖_F
    sign_conflict_rate: float | None  # TIES: non-zero trimmed entries that disagree with the elected sign
    kept_density: float | None  # TIES: share of entries the trim kept, mean over adapters
    merged_density: float | None  # share of non-zero entries of the merged ΔW (dense methods)
    delta_norm: float  # ‖merged ΔW‖_F

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("name")
        return d


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarize(modules: Sequence[ModuleReport]) -> dict:
    if not modules:
        return {"modules": 0}
    # a module whose merged ΔW is 0 keeps "all" of nothing: it has no retained energy to report
    nonzero = [m for m in modules if m.delta_norm > 0]
    worst = min(nonzero, key=lambda m: m.retained_energy) if nonzero else None
    ranks = [m.rank for m in modules]
    return {
        "modules": len(modules),
        "zero_modules": len(modules) - len(nonzero),
        "rank_min": min(ranks),
        "rank_max": max(ranks),
        "rank_mean": statistics.fmean(ranks),
        "retained_energy_mean": statistics.fmean(m.retained_energy for m in nonzero) if nonzero else None,
        "retained_energy_min": worst.retained_energy if worst else None,
        "worst_module": worst.name if worst else None,
        "rel_frobenius_error_mean": statistics.fmean(m.rel_frobenius_error for m in modules),
        "rel_frobenius_error_max": max(m.rel_frobenius_error for m in modules),
        "sign_conflict_rate_mean": _mean([m.sign_conflict_rate for m in modules]),
        "kept_density_mean": _mean([m.kept_density for m in modules]),
        "merged_density_mean": _mean([m.merged_density for m in modules]),
        "output_parameters": sum(m.rank * (m.d_in + m.d_out) for m in modules),
    }
