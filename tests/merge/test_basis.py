"""The core-space bases: R from the Cholesky factor of the Gram matrix with Q implicit, and the Householder QR
fallback for rank-deficient or ill-conditioned stacks — both checked against X = Q R with orthonormal Q."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.merge.core import core_space, from_core, orthonormal_basis
from tiesmerge.merge.refactor import RankRequest
from tiesmerge.merge.types import RankMode

pytestmark = pytest.mark.core


def _check(x: torch.Tensor, basis) -> None:
    k = basis.r.shape[0]
    q = basis.times(torch.eye(k))
    assert_close(q.T @ q, torch.eye(k), atol=2e-5, rtol=0)  # orthonormal
    assert_close(q @ basis.r, x, atol=2e-5, rtol=2e-5)  # X = Q R
    assert torch.equal(basis.r, basis.r.triu())


def test_a_well_conditioned_stack_takes_the_gram_path():
    x = torch.randn(300, 24, generator=torch.Generator().manual_seed(0))
    basis = orthonormal_basis(x)
    assert not basis.explicit and bool((basis.r.diagonal() > 0).all())
    _check(x, basis)
    # R equals Householder's up to the signs of its rows
    _, r_h = torch.linalg.qr(x)
    assert_close(basis.r, r_h * r_h.diagonal().sign()[:, None], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("make", [
    lambda x: torch.cat([x, x[:, :3]], 1),  # the same adapter's factor twice: rank-deficient
    lambda x: torch.cat([x, torch.zeros(300, 2)], 1),  # a zero-initialised B
    lambda x: x * torch.logspace(0, -5, x.shape[1]),  # κ ≈ 1e5: the Gram would lose the small directions
])
def test_rank_deficient_or_ill_conditioned_stacks_fall_back_to_householder(make):
    x = make(torch.randn(300, 16, generator=torch.Generator().manual_seed(1)))
    basis = orthonormal_basis(x)
    assert basis.explicit
    _check(x, basis)


def test_merging_through_implicit_bases_reconstructs_the_adapters():
    """One adapter through core space at rank full (= identity) gives back its ΔW; T adapters' cores sum to ΣΔW."""
    gen = torch.Generator().manual_seed(2)
    bs = [torch.randn(200, r, generator=gen) for r in (4, 8, 6)]
    as_ = [torch.randn(r, 150, generator=gen) for r in (4, 8, 6)]
    space = core_space(bs, as_)
    assert not space.basis_b.explicit and not space.basis_a.explicit
    fac = from_core(space, space.cores.sum(0), RankRequest(RankMode.fixed, 18))
    want = sum(b @ a for b, a in zip(bs, as_))
    assert_close(fac.B @ fac.A, want, atol=1e-3, rtol=1e-4)
