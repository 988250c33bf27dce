"""Core-space merging (Panariello et al. 2025, arXiv 2509.17786).

With U_B an orthonormal basis of [s_1B_1 … s_TB_T] and V_A of [A_1; …; A_T]ᵀ (thin QRs), every
ΔW_t = s_t B_t A_t = U_B M_t V_Aᵀ exactly, where M_t = (U_Bᵀ s_tB_t)(A_t V_A) is only K × K
(K = Σ r_t). A method merges the cores M_t; the result maps back as an adapter of rank ≤ K, or is
truncated through the SVD of the small merged core. No dense d_out × d_in matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tiesmerge.merge.refactor import Factorization, RankRequest, choose_rank, split_factors
from tiesmerge.merge.types import RankMode


@dataclass(frozen=True)
class CoreSpace:
    u_b: torch.Tensor  # (d_out, kb), orthonormal columns
    v_a: torch.Tensor  # (d_in, ka), orthonormal columns
    cores: torch.Tensor  # (T, kb, ka): ΔW_t = u_b @ cores[t] @ v_aᵀ


def core_space(bs: list[torch.Tensor], as_: list[torch.Tensor]) -> CoreSpace:
    """Bases and per-adapter cores from the scaled factors (bs[t] = s_t B_t, as_[t] = A_t)."""
    b_cat, a_cat = torch.cat(bs, 1), torch.cat(as_, 0)
    u_b, r_b = torch.linalg.qr(b_cat)  # b_cat = u_b r_b: u_bᵀ s_tB_t = r_b[:, block t]
    v_a, r_a = torch.linalg.qr(a_cat.T)  # a_catᵀ = v_a r_a: A_t v_a = r_a[:, block t]ᵀ
    cores, start = [], 0
    for b in bs:
        stop = start + b.shape[1]
        cores.append(r_b[:, start:stop] @ r_a[:, start:stop].T)
        start = stop
    return CoreSpace(u_b, v_a, torch.stack(cores))


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
    return split_factors(space.u_b @ u[:, :keep], s[:keep], vh[:keep] @ space.v_a.T, rank, total)
