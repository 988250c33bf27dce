"""KnOTS: align the task updates in one shared basis, then merge there (Stoica et al., ICLR 2025,
arXiv 2410.19735).

The updates are concatenated side by side, [ΔW_1 … ΔW_T] = U Σ [V_1ᵀ … V_Tᵀ], so every task is expressed in the
same left basis U; each task's representation is Σ V_tᵀ (k × d_in), the chosen method merges those, and the result
maps back: ΔW = U · merge(Σ V_tᵀ). Variants: TIES (trim, elect sign, disjoint mean), DARE (random drop with
rescale, then sign election and the disjoint mean), and linear (the weighted sum — which equals task arithmetic,
since U Σ Σ_t w_t V_tᵀ = Σ_t w_t ΔW_t).

In full space this is the paper's method on the dense ΔW. In core space it runs on the K × K cores: the alignment is
the same (the bases are orthonormal), but TIES/DARE then act on the representations' coordinates in the core basis
instead of the d_in input coordinates — a different, cheaper merge (exact for the linear variant). Directions with
zero singular value are dropped (subspace.py), as the reference implementation drops s ≤ 1e-5.
"""

from __future__ import annotations

from enum import Enum
from functools import partial

import torch

from tiesmerge.merge import steps
from tiesmerge.merge.methods.subspace import svd_nonzero
from tiesmerge.merge.params import RESCALE
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams


class Variant(str, Enum):
    ties = "ties"
    dare = "dare"
    linear = "linear"


def aligned(deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, reps): the shared left basis (m × k) and each task's representation Σ V_tᵀ (T × k × n)."""
    t, m, n = deltas.shape
    u, s, vh = svd_nonzero(deltas.double().permute(1, 0, 2).reshape(m, t * n))
    reps = (s[:, None] * vh).reshape(len(s), t, n).permute(1, 0, 2)
    return u, reps


def dare(reps: torch.Tensor, p: MethodParams) -> torch.Tensor:
    """Drop each entry with probability 1 − density (seeded per module), rescale the kept ones by 1 / density."""
    gen = torch.Generator(device="cpu").manual_seed(p.seed)
    out = reps.clone()
    for t, density in enumerate(p.densities):
        if density >= 1:
            continue
        keep = (torch.rand(reps[t].shape, generator=gen, dtype=torch.float64) < density).to(reps.device)
        out[t] = reps[t] * keep
        if p.option(RESCALE) is None or p.option(RESCALE):
            out[t] /= density
    return out


def knots(deltas: torch.Tensor, p: MethodParams, variant: Variant) -> MergeOutput:
    u, reps = aligned(deltas)
    if u.shape[1] == 0:
        return MergeOutput(torch.zeros_like(deltas[0]), MergeStats())
    stats = MergeStats()
    weights = torch.tensor(p.weights, dtype=reps.dtype, device=reps.device)
    if variant is Variant.linear:
        merged = torch.tensordot(weights, reps, dims=1)
    else:
        if variant is Variant.dare:
            trimmed = dare(reps, p)  # DARE replaces the magnitude trim
        else:
            trimmed = steps.trim(reps, p.densities)  # Step 1: trim each task's representation
        kept = float((trimmed != 0).double().mean())
        weighted = trimmed * weights.reshape(-1, 1, 1)
        sign = steps.elect_sign(weighted, p.sign)  # Step 2: elect signs in the aligned basis
        merged, agreeing, disagreeing = steps.merge_agreeing(weighted, weights, sign,
                                                             normalize=p.normalize is not False)  # Step 3
        stats = MergeStats(kept_density=kept, sign_conflict_rate=steps.conflict_rate(agreeing, disagreeing))
    return MergeOutput((p.lam * (u @ merged)).to(deltas.dtype), stats)


knots_ties = partial(knots, variant=Variant.ties)
knots_dare = partial(knots, variant=Variant.dare)
knots_linear = partial(knots, variant=Variant.linear)
