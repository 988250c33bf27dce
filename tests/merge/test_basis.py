"""The core-space bases from the Gram matrix's eigendecomposition (Q implicit), checked against X = Q R with
orthonormal Q, against Householder's R (same singular values), and at a rank-deficient stack's true rank."""

from __future__ import annotations

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
