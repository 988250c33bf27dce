"""RegMean (Jin et al., ICLR 2023, arXiv 2212.09849) for LoRA: per linear layer, the ΔW minimising
Σ_t ‖(ΔW − ΔW_t) X_t‖² over each specialist's layer inputs X_t is

    ΔW* = (Σ_t ΔW_t G̃_t)(Σ_t G̃_t)⁻¹,    G_t = X_t X_tᵀ,   G̃ = a·G + (1 − a)·diag(G)  (a: off_diagonal).

With ΔW_t = s_t B_t A_t its column space lies in span(B_1 … B_T), so it is exactly a LoRA of rank Σ r_t:
B* = λ [s_1B_1 … s_TB_T], A*_t = A_t G̃_t (Σ G̃)⁻¹. Adapter weights w_t weigh the Grams (w_t G̃_t).

In core space the Grams are taken in the span of the A rows (Ĝ_t = Q_Aᵀ G̃_t Q_A) and the cores merge as
M* = λ Σ_t M_t Ĝ_t (Σ Ĝ)⁻¹ — full-space RegMean when the inputs lie in that span, a cheaper, weaker variant
otherwise (the merged rows cannot leave span(A))."""

from __future__ import annotations

from typing import Sequence

import torch

from tiesmerge.merge.params import ParamDef
from tiesmerge.merge.types import MethodParams

OFF_DIAGONAL = ParamDef("off_diagonal", float, 1.0, "RegMean: share of each Gram's off-diagonal kept, a in "
                        "a·G + (1-a)·diag(G) (1: the plain Gram)", 0, 1)
RIDGE = 1e-6  # relative to the mean diagonal of Σ G̃: keeps the solve defined for inputs of low rank


def needs_statistics(deltas: torch.Tensor, p: MethodParams):
    raise ValueError("regmean merges from the adapters' factors and input statistics, not from a ΔW stack")


def shrink(gram: torch.Tensor, off_diagonal: float) -> torch.Tensor:
    """G̃ = a·G + (1 − a)·diag(G): shrinks the off-diagonal entries toward 0 (a = 1: the plain Gram)."""
    if off_diagonal == 1.0:
        return gram
    return off_diagonal * gram + (1.0 - off_diagonal) * torch.diag(torch.diagonal(gram))


def weighted_grams(grams: Sequence[torch.Tensor], p: MethodParams) -> list[torch.Tensor]:
    a = p.option(OFF_DIAGONAL)
    return [w * shrink(g.double(), a) for w, g in zip(p.weights, grams)]


def solve_right(rhs: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """rhs · total⁻¹ for a symmetric positive semi-definite `total`, with a small ridge."""
    d = total.shape[0]
    ridge = RIDGE * float(torch.diagonal(total).mean().clamp_min(1e-30))
    eye = torch.eye(d, dtype=total.dtype, device=total.device)
    return torch.linalg.solve(total + ridge * eye, rhs.T).T


def regmean_factors(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], grams: Sequence[torch.Tensor],
                    p: MethodParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*, A*) with B* A* = λ (Σ s_tB_tA_t G̃_t)(Σ G̃_t)⁻¹; bs[t] = s_t B_t."""
    g = weighted_grams(grams, p)
    total = torch.stack(g).sum(0)
    rhs = torch.cat([a.double() @ gt for a, gt in zip(as_, g)], 0)  # [A_t G̃_t] stacked: Σr × d_in
    a_star = solve_right(rhs, total)
    b_star = torch.cat(list(bs), 1) * p.lam
    return b_star.float(), a_star.float()


def regmean_core(cores: torch.Tensor, q_a: torch.Tensor, grams: Sequence[torch.Tensor], p: MethodParams) -> torch.Tensor:
    """The merged core λ Σ M_t Ĝ_t (Σ Ĝ)⁻¹ with Ĝ_t = Q_Aᵀ G̃_t Q_A (q_a: the A-side basis, d_in × k)."""
    q = q_a.double()
    g = [q.T @ gt @ q for gt in weighted_grams(grams, p)]
    total = torch.stack(g).sum(0)
    rhs = sum(m.double() @ gt for m, gt in zip(cores, g))
    return (p.lam * solve_right(rhs, total)).to(cores.dtype)
