"""Task arithmetic (Ilharco et al. 2023): λ · Σ w_i ΔW_i, optionally divided by Σ w_i.

Linear in the deltas, so it is also exactly a concatenation of the scaled LoRA factors
(see `coefficients`), which the driver uses to avoid dense ΔW work and SVD error.
"""

from __future__ import annotations

import torch

from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams


def coefficients(p: MethodParams) -> tuple[float, ...]:
    """c_i such that the merge is Σ c_i ΔW_i."""
    total = sum(p.weights)
    divisor = total if (p.normalize and abs(total) >= 1e-8) else 1.0
    return tuple(p.lam * w / divisor for w in p.weights)


def task_arithmetic(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    c = torch.tensor(coefficients(p), dtype=deltas.dtype, device=deltas.device)
    merged = torch.tensordot(c, deltas, dims=1)
    return MergeOutput(merged, MergeStats(kept_density=1.0))
