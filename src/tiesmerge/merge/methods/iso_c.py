"""Iso-C, isotropic merging in the common subspace (Marczak et al., ICML 2025, arXiv 2502.04959).

The summed update's singular values are all replaced by their mean — a flat (isotropic) spectrum, so no task's
dominant directions drown the others: ΔW = λ · σ̄ · U Vᵀ from the SVD of Σ w_t ΔW_t.

LoRA-aware (see subspace.py): the mean is over the non-zero singular values and only those directions are kept, so
the result has the rank of the sum (≤ Σ r_t) and stays a LoRA. fusion-bench's `iso_c` flattens all min(d_out, d_in)
values — for a low-rank sum that adds null-space directions and a different scale; the two agree when the sum has
full rank.
"""

from __future__ import annotations

import torch

from tiesmerge.merge.methods.subspace import svd_nonzero, weighted
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams


def iso_c(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    u, s, vh = svd_nonzero(weighted(deltas, p.weights).sum(0))
    if s.numel() == 0:
        return MergeOutput(torch.zeros_like(deltas[0]), MergeStats())
    merged = s.mean() * (u @ vh)
    return MergeOutput((p.lam * merged).to(deltas.dtype), MergeStats())
