"""The core-space bases from the Gram matrix's eigendecomposition (Q implicit), checked against X = Q R with
orthonormal Q, against Householder's R (same singular values), and at a rank-deficient stack's true rank."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.merge.core_space import core_space, from_core, orthonormal_basis
from tiesmerge.merge.truncated_svd import RankRequest
from tiesmerge.merge.types import RankMode

pytestmark = pytest.mark.core


def _check(x: torch.Tensor, basis, rank: int) -> None:
    assert basis.r.shape == (rank, x.shape[1])
    q = basis.times(torch.eye(rank))
    assert_close(q.T @ q, torch.eye(rank), atol=2e-5, rtol=0)  # orthonormal
    assert_close(q @ basis.r, x, atol=2e-5, rtol=2e-5)  # X = Q R


def test_a_full_rank_stack():
    x = torch.randn(300, 24, generator=torch.Generator().manual_seed(0))
    basis = orthonormal_basis(x)
    assert not basis.explicit
    _check(x, basis, 24)
    _, r_h = torch.linalg.qr(x)  # Householder's R has the same singular values (R = Q_Hᵀ X both)
    assert_close(torch.linalg.svdvals(basis.r), torch.linalg.svdvals(r_h), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("make, rank", [
    (lambda x: torch.cat([x, 2 * x[:, :3]], 1), 16),  # adapters sharing directions: rank-deficient
    (lambda x: torch.cat([x, torch.zeros(300, 2)], 1), 16),  # a zero-initialised B
    (lambda x: x * torch.logspace(0, -3, x.shape[1]), 16),  # κ = 1e3: kept whole
])
def test_rank_deficient_and_ill_conditioned_stacks(make, rank):
    x = make(torch.randn(300, 16, generator=torch.Generator().manual_seed(1)))
    basis = orthonormal_basis(x)
    _check(x, basis, rank)


def test_directions_below_rtol_are_dropped_and_weigh_nothing():
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(3)) * torch.cat([torch.ones(12), torch.full((4,), 1e-7)])
    basis = orthonormal_basis(x)
    assert basis.r.shape[0] == 12
    assert_close(basis.times(basis.r), x, atol=1e-5, rtol=0)


def test_an_all_zero_stack_takes_householder():
    basis = orthonormal_basis(torch.zeros(50, 6))
    assert basis.explicit and torch.equal(basis.q @ basis.r, torch.zeros(50, 6))


def test_merging_through_implicit_bases_reconstructs_the_adapters():
    """T adapters' cores sum to ΣΔW through the implicit bases, also when two adapters share directions (the
    cores are then smaller than K × K)."""
    gen = torch.Generator().manual_seed(2)
    bs = [torch.randn(200, r, generator=gen) for r in (4, 8, 6)]
    as_ = [torch.randn(r, 150, generator=gen) for r in (4, 8, 6)]
    bs.append(bs[0] * 0.5)  # a fourth adapter in the first one's subspace
    as_.append(as_[0].flip(0))
    space = core_space(bs, as_)
    assert space.cores.shape == (4, 18, 18) and not space.basis_b.explicit
    fac = from_core(space, space.cores.sum(0), RankRequest(RankMode.fixed, 18))
    want = sum(b @ a for b, a in zip(bs, as_))
    assert_close(fac.B @ fac.A, want, atol=1e-3, rtol=1e-4)


def _stack(seed, d, ranks, decay):
    """A stack of T factors with spectra decaying to `decay` (a trained adapter's weak directions), the last two
    sharing directions (rank-deficient)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(d, r, generator=gen) * torch.logspace(0, math.log10(decay), r) for r in ranks]
    blocks[-1] = blocks[-2] @ torch.randn(ranks[-2], ranks[-1], generator=gen) * 0.5
    return blocks


def _reference_ties(bs, as_, p):
    """Core-space TIES through bases from the full float64 Gram's eigendecomposition (the path before the blocked
    Gram), written out here: X = [s_tB_t], eigh(XᵀX) = V Λ Vᵀ, Q = X V Λ^-½, R = Λ^½ Vᵀ."""
    from tiesmerge.merge.methods.ties import ties

    def basis(x):
        x64 = x.double()
        lam, v = torch.linalg.eigh(x64.T @ x64)
        keep = lam > 1e-10 * lam[-1]
        lam, v = lam[keep], v[:, keep]
        return x64 @ v / lam.sqrt(), lam.sqrt()[:, None] * v.T

    (q_b, r_b), (q_a, r_a) = basis(torch.cat(bs, 1)), basis(torch.cat(as_, 0).T)
    cores, start = [], 0
    for b in bs:
        stop = start + b.shape[1]
        cores.append((r_b[:, start:stop] @ r_a[:, start:stop].T).float())
        start = stop
    merged = ties(torch.stack(cores), p).delta.double()
    return q_b @ merged @ q_a.T


def test_blocked_gram_bases_are_orthonormal_and_merge_as_the_full_gram_did():
    """K = 4 × 96 = 384 ≥ 2 blocks, so the Gram is formed block by block (upper triangle): Q stays orthonormal to
    float32's precision (Q = X W is one float32 GEMM) and the merged ΔW is the full float64 Gram's to < 1e-6."""
    from tiesmerge.merge.core_space import GRAM_BLOCK, gram_upper
    from tiesmerge.merge.types import MethodParams

    ranks = (96, 96, 96, 96)
    assert sum(ranks) >= 2 * GRAM_BLOCK
    bs = _stack(0, 700, ranks, 1e-4)
    as_ = [x.T for x in _stack(1, 500, ranks, 1e-3)]
    x = torch.cat(bs, 1).double()
    assert_close(torch.triu(gram_upper(x)), torch.triu(x.T @ x), rtol=1e-12, atol=1e-12)
    space = core_space(bs, as_)
    for basis in (space.basis_b, space.basis_a):
        q = basis.times(torch.eye(basis.r.shape[0])).double()
        assert float((q.T @ q - torch.eye(q.shape[1], dtype=torch.float64)).abs().max()) < 1e-4
    assert space.basis_b.r.shape[0] == 288  # the shared directions are found: rank 3 × 96, not 384
    p = MethodParams(weights=(0.25,) * 4, densities=(0.2,) * 4)
    from tiesmerge.merge.registry import get
    from tiesmerge.merge.types import Method

    out = get(Method.ties).dense(space.cores, p)
    fac = from_core(space, out.delta, RankRequest(RankMode.full))
    got = fac.B.double() @ fac.A.double()
    want = _reference_ties(bs, as_, p)
    assert float((got - want).norm() / want.norm()) < 1e-6
