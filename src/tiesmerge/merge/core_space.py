"""Core-space merging (Panariello et al. 2025, arXiv 2509.17786).

With U_B an orthonormal basis of [s_1B_1 … s_TB_T] and V_A of [A_1; …; A_T]ᵀ (see "The bases" below), every
ΔW_t = s_t B_t A_t = U_B M_t V_Aᵀ exactly, where M_t = (U_Bᵀ s_tB_t)(A_t V_A) is only K × K
(K = Σ r_t). A method merges the cores M_t; the result maps back as an adapter of rank ≤ K, or is
truncated through the SVD of the small merged core. No dense d_out × d_in matrix is ever formed.

The bases: only R of each stack X = Q R is needed (the cores are products of R's blocks), and Q only to map
the merged core back (Q M). Both come from the eigendecomposition of the float64 Gram matrix XᵀX = V Λ Vᵀ —
one GEMM of X with itself and a K × K eigh, no Householder sweeps (3× faster at 72B shapes): R = Λ^½ Vᵀ and
Q = X V Λ^-½, kept implicit (Q M = X (V Λ^-½ M): a small product and one GEMM). Directions whose singular
value is below RTOL × the largest are dropped, so a rank-deficient stack (adapters that share directions, a
zero-initialised B) gets a basis of its true rank k < K and smaller cores; what is dropped weighs less than
bf16's own rounding. An all-zero stack takes the Householder QR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tiesmerge.merge.truncated_svd import Factorization, RankRequest, choose_rank, split_factors
from tiesmerge.merge.types import RankMode

RTOL = 1e-5  # directions with σ < RTOL · σ_max are dropped (their energy is below bf16 resolution)


@dataclass(frozen=True)
class Basis:
    """An orthonormal basis Q of a stack's columns, with X ≈ Q R (exact up to the dropped directions):
    Q explicit (Householder) or implicit (Q = X W, W = V Λ^-½)."""

    r: torch.Tensor  # (k, n)
    q: torch.Tensor | None = None  # explicit Q (d, k)
    x: torch.Tensor | None = None  # the stack itself, when Q is implicit
    w64: torch.Tensor | None = None  # (n, k) float64: Q = X W

    def times(self, m: torch.Tensor) -> torch.Tensor:
        """Q @ m."""
        if self.q is not None:
            return self.q @ m
        return self.x @ (self.w64 @ m.double()).to(self.x.dtype)

    @property
    def explicit(self) -> bool:
        return self.q is not None


GRAM_BLOCK = 128  # columns per block of the Gram's upper triangle


def gram_upper(x64: torch.Tensor, block: int = GRAM_BLOCK) -> torch.Tensor:
    """XᵀX in float64, its upper triangle only (the lower one is left unset): block column j is X[:, :j+1]ᵀ X_j, so
    with K = 4 blocks the GEMMs do 10/16 of a full product's work (torch has no SYRK). Read it with UPLO="U"."""
    k = x64.shape[1]
    if k < 2 * block:
        return x64.T @ x64
    g = torch.empty((k, k), dtype=x64.dtype, device=x64.device)
    for j0 in range(0, k, block):
        j1 = min(k, j0 + block)
        torch.matmul(x64[:, :j1].T, x64[:, j0:j1], out=g[:j1, j0:j1])
    return g


def orthonormal_basis(x: torch.Tensor, rtol: float = RTOL) -> Basis:
    """Q and R from the eigendecomposition of the float64 Gram matrix, at the stack's numerical rank.

    The Gram stays in float64: formed in float32 it moves the merged ΔW by ~7e-4 and Q's orthogonality to
    ‖QᵀQ − I‖ ~ 0.6 at a 72B layer whose A stack has σ_min/σ_max ~ 1e-5 (benchmarks: docs/performance.md);
    CholeskyQR2 in float32 fails on the rank-deficient stacks that adapters sharing directions give and costs
    three float32 GEMMs of X's size to the float64 Gram's one (which runs at half float32's rate)."""
    x64 = x.double()
    lam, v = torch.linalg.eigh(gram_upper(x64), UPLO="U")  # ascending
    top = float(lam[-1]) if lam.numel() else 0.0
    if top <= 0.0:  # an all-zero stack: any basis reconstructs it
        q, r = torch.linalg.qr(x)
        return Basis(r=r, q=q)
    keep = torch.nonzero(lam > (rtol ** 2) * top).flatten().flip(0)  # strongest first
    root = lam[keep].sqrt()
    vk = v[:, keep]
    return Basis(r=(root[:, None] * vk.T).to(x.dtype), x=x, w64=vk / root)


@dataclass(frozen=True)
class CoreSpace:
    basis_b: Basis  # of [s_1B_1 … s_TB_T] (d_out × K)
    basis_a: Basis  # of [A_1; …; A_T]ᵀ (d_in × K)
    cores: torch.Tensor  # (T, kb, ka): ΔW_t = Q_B @ cores[t] @ Q_Aᵀ

    @property
    def u_b(self) -> torch.Tensor:
        """Q_B as a matrix (formed on demand; the merge path never needs it)."""
        return self.basis_b.times(torch.eye(self.basis_b.r.shape[0], dtype=self.basis_b.r.dtype,
                                            device=self.basis_b.r.device))

    @property
    def v_a(self) -> torch.Tensor:
        return self.basis_a.times(torch.eye(self.basis_a.r.shape[0], dtype=self.basis_a.r.dtype,
                                            device=self.basis_a.r.device))


def core_space(bs: list[torch.Tensor], as_: list[torch.Tensor]) -> CoreSpace:
    """Bases and per-adapter cores from the scaled factors (bs[t] = s_t B_t, as_[t] = A_t)."""
    b_cat, a_cat = torch.cat(bs, 1), torch.cat(as_, 0)
    basis_b = orthonormal_basis(b_cat)  # b_cat = Q_B r_b: Q_Bᵀ s_tB_t = r_b[:, block t]
    basis_a = orthonormal_basis(a_cat.T)  # a_catᵀ = Q_A r_a: A_t Q_A = r_a[:, block t]ᵀ
    r_b, r_a = basis_b.r, basis_a.r
    cores, start = [], 0
    for b in bs:
        stop = start + b.shape[1]
        cores.append(r_b[:, start:stop] @ r_a[:, start:stop].T)
        start = stop
    return CoreSpace(basis_b, basis_a, torch.stack(cores))


def from_core(space: CoreSpace, merged: torch.Tensor, req: RankRequest) -> Factorization:
    """Map a merged core back to LoRA factors: B′ = U_B U √Σ, A′ = √Σ Vᵀ V_Aᵀ, at the requested rank (≤ K)."""
    u, s, vh = torch.linalg.svd(merged.double(), full_matrices=False)
    u, s, vh = u.float(), s.float(), vh.float()
    total = float((s.double() ** 2).sum())  # ‖ΔW‖² = ‖M‖² since the bases are orthonormal
    cap = min(merged.shape)
    if req.mode is RankMode.auto and req.max_rank:
        cap = min(cap, req.max_rank)
    rank = choose_rank(s.square(), total, req, cap)
    keep = min(rank, s.numel())  # map back only the kept directions (the big GEMMs shrink K/R-fold)
    return split_factors(space.basis_b.times(u[:, :keep]), s[:keep], space.basis_a.times(vh[:keep].T).T, rank, total)


def from_factors(b: torch.Tensor, a: torch.Tensor, req: RankRequest) -> Factorization:
    """Factor ΔW = b·a (b: d_out × K, a: K × d_in) without forming it.

    `full` returns the concatenation as is (lossless). Otherwise it is core space with one adapter: the bases of
    b and aᵀ (orthonormal_basis) give ΔW = Q_b (R_b R_aᵀ) Q_aᵀ, whose small K × K core has the singular values of
    ΔW; from_core truncates it.
    """
    space = core_space([b], [a])
    if req.mode is RankMode.full:
        total = float(space.cores[0].double().square().sum())
        return Factorization(B=b.contiguous(), A=a.contiguous(), rank=b.shape[1], retained_energy=1.0, rel_error=0.0,
                             delta_norm=math.sqrt(total))
    return from_core(space, space.cores[0], req)
