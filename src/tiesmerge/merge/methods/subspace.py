"""Shared pieces of the subspace methods (TSV-M, Iso-C, Iso-CTS, KnOTS): an SVD that keeps only the directions a
matrix really has, and the polar factor that makes a stack of directions orthonormal.

LoRA-aware rule, used by every subspace method here: singular directions whose singular value is zero (below
`RANK_TOL` × the largest) do not exist. The dense references (fusion-bench) keep min(d_out, d_in) directions per
matrix, so for a low-rank update they pick up arbitrary null-space vectors — which then change the orthogonalised
result, or, flattened to the mean singular value, turn it into a full-rank matrix no LoRA can hold. Keeping only the
real directions makes every method equivariant to the orthonormal embeddings of core space: applied to the K × K
cores it gives exactly what it gives on the dense ΔW (tested), and it equals the dense reference whenever the
reference's matrices have full rank.
"""

from __future__ import annotations

import torch

RANK_TOL = 1e-6  # relative to the largest singular value; core space's fp32 QR leaves ~1e-7 noise


def svd_nonzero(x: torch.Tensor, tol: float = RANK_TOL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64 with only the directions whose singular value exceeds tol × σ_max."""
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    k = int((s > tol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return u[:, :k], s[:k], vh[:k]


def polar(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor of x's polar decomposition (U Vᵀ of its thin SVD): the closest matrix with
    orthonormal columns, as TSV-M and Iso-CTS use to decorrelate stacked singular vectors."""
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def weighted(deltas: torch.Tensor, weights) -> torch.Tensor:
    """w_t · ΔW_t in float64."""
    w = torch.tensor(weights, dtype=torch.float64, device=deltas.device).reshape(-1, 1, 1)
    return deltas.double() * w


def concat_rank(deltas: torch.Tensor, tol: float = RANK_TOL) -> int:
    """The rank of [ΔW_1 … ΔW_T] (the span every subspace method works in; the same in core and full space)."""
    m, n = deltas.shape[1:]
    cat = deltas.double().permute(1, 0, 2).reshape(m, -1)
    return svd_nonzero(cat if m <= cat.shape[1] else cat.T, tol)[1].numel()
