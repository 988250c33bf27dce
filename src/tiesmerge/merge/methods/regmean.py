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
# The solve's floor: every adapter's Gram gets ε·I added, ε = FLOOR × ‖Σ_t w_t G̃_t‖_F / Σ_t w_t. The Frobenius norm
# bounds the largest eigenvalue λ₁ from above (and ≤ √d λ₁), so ε lies between 10⁻⁶ λ₁ and 10⁻⁶ √d λ₁ (2·10⁻⁴ λ₁ at
# d = 29 568): tens of times above the float32 rounding of a stored Gram (its negative eigenvalues reach a few
# 10⁻⁸ λ₁: −6.6e-8 with λ₁ ≈ 2 on SmolLM2's layer 0), below the eigenvalues that carry the inputs. Added to the
# numerator's G̃_t as well as to the sum, it never biases the answer where the Grams agree (identical Grams give the
# weighted mean exactly, whatever their rank) and, in the directions no input visits (rank-deficient Grams: fewer
# tokens than input features), it gives the weighted mean of the ΔW_t instead of 0 or noise. A sum that is still not
# positive definite (a damaged, clearly indefinite Gram) gets ε × 100 up to twice, then a clear error.
FLOOR = 1e-6
RETRIES = 2


def needs_statistics(deltas: torch.Tensor, p: MethodParams):
    raise ValueError("regmean merges from the adapters' factors and input statistics, not from a ΔW stack")


def shrink(gram: torch.Tensor, off_diagonal: float) -> torch.Tensor:
    """G̃ = a·G + (1 − a)·diag(G): shrinks the off-diagonal entries toward 0 (a = 1: the plain Gram)."""
    if off_diagonal == 1.0:
        return gram
    return off_diagonal * gram + (1.0 - off_diagonal) * torch.diag(torch.diagonal(gram))


def symmetric(gram: torch.Tensor) -> torch.Tensor:
    """(G + Gᵀ)/2 in float64: a float32 GEMM's XᵀX need not be symmetric to the last bit."""
    g = gram.double()
    return (g + g.T) * 0.5


def weighted_grams(grams: Sequence[torch.Tensor], p: MethodParams) -> list[torch.Tensor]:
    """w_t·G̃_t, symmetrised, in float64."""
    if any(not (w > 0) for w in p.weights):
        raise ValueError(f"regmean weighs each adapter's Gram by its weight: weights must be positive, got "
                         f"{list(p.weights)}")
    a = p.option(OFF_DIAGONAL)
    return [w * shrink(symmetric(g), a) for w, g in zip(p.weights, grams)]


def floor(total: torch.Tensor, weight_sum: float) -> float:
    """ε: FLOOR × ‖total‖_F / Σ w (an upper bound of the top eigenvalue), never 0."""
    return FLOOR * max(float(torch.linalg.matrix_norm(total)), 1e-300) / weight_sum


def solve_right(rhs: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """rhs · total⁻¹ for a symmetric positive definite `total` (Cholesky)."""
    chol, info = torch.linalg.cholesky_ex(total)
    if int(info) != 0:
        raise torch.linalg.LinAlgError("not positive definite")
    return torch.cholesky_solve(rhs.T, chol).T


def floored_solve(numerator, grams: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """(Σ_t numerator(t, G̃_t + ε I)) · (Σ_t w_t (G̃_t/w_t + ε I))⁻¹, with `grams` = w_t G̃_t; ε raised while the sum is
    not positive definite."""
    total = torch.stack(list(grams)).sum(0)
    w_sum = float(sum(weights))
    eps = floor(total, w_sum)
    eye = torch.eye(total.shape[0], dtype=total.dtype, device=total.device)
    for _ in range(RETRIES + 1):
        floored = [g + (w * eps) * eye for g, w in zip(grams, weights)]
        try:
            return solve_right(numerator(floored), total + (w_sum * eps) * eye)
        except torch.linalg.LinAlgError:
            eps *= 100.0
    raise ValueError("regmean: the summed Gram is not positive semi-definite (its negative eigenvalues exceed "
                     "rounding): the statistics are damaged; make them again with `tiesmerge calibrate`")


def regmean_factors(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], grams: Sequence[torch.Tensor],
                    p: MethodParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*, A*) with B* A* = λ (Σ s_tB_tA_t G̃_t)(Σ G̃_t)⁻¹; bs[t] = s_t B_t."""
    g = weighted_grams(grams, p)
    a_star = floored_solve(lambda floored: torch.cat([a.double() @ gt for a, gt in zip(as_, floored)], 0),
                           g, p.weights)  # [A_t (w_t G̃_t + w_t ε I)] stacked: Σr × d_in
    b_star = torch.cat(list(bs), 1) * p.lam
    return b_star.float(), a_star.float()


def regmean_core(cores: torch.Tensor, q_a: torch.Tensor, grams: Sequence[torch.Tensor], p: MethodParams) -> torch.Tensor:
    """The merged core λ Σ M_t Ĝ_t (Σ Ĝ)⁻¹ with Ĝ_t = Q_Aᵀ G̃_t Q_A (q_a: the A-side basis, d_in × k)."""
    q = q_a.double()
    g = [symmetric(q.T @ gt @ q) for gt in weighted_grams(grams, p)]
    merged = floored_solve(lambda floored: sum(m.double() @ gt for m, gt in zip(cores, floored)), g, p.weights)
    return (p.lam * merged).to(cores.dtype)
