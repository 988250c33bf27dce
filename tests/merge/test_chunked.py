"""Bounded-memory TIES from factors equals the dense kernel entry for entry."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.merge.chunked import chunk_rows, chunked_product, ties_from_factors
from tiesmerge.merge.methods.ties import ties
from tiesmerge.merge.types import MethodParams, SignRule

pytestmark = pytest.mark.core


def _factors(seed, m, n, ranks, integer=False):
    gen = torch.Generator().manual_seed(seed)
    if integer:  # small integers: many exact ties at the trim threshold
        return ([torch.randint(-2, 3, (m, r), generator=gen).float() for r in ranks],
                [torch.randint(-2, 3, (r, n), generator=gen).float() for r in ranks])
    return [torch.randn(m, r, generator=gen) for r in ranks], [torch.randn(r, n, generator=gen) for r in ranks]


def _stack(bs, as_, chunk):
    """The dense reference on the very same ΔW entries (row-chunked GEMMs can round differently)."""
    rows = chunk_rows(as_[0].shape[1], chunk)
    return torch.stack([chunked_product(b, a, rows) for b, a in zip(bs, as_)])


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("sign", [SignRule.sum, SignRule.count])
@pytest.mark.parametrize("chunk", [1 << 24, 37, 500])
def test_chunked_equals_dense(integer, sign, chunk):
    bs, as_ = _factors(3, 53, 41, (4, 7, 2), integer=integer)
    p = MethodParams(weights=(0.5, 1.2, 0.3), densities=(0.2, 0.45, 1.0), lam=1.3, sign=sign)
    dense = ties(_stack(bs, as_, chunk), p)
    got = ties_from_factors(bs, as_, p, chunk_elements=chunk)
    assert_close(got.delta, dense.delta, rtol=1e-5, atol=1e-5)
    assert got.stats.kept_density == pytest.approx(dense.stats.kept_density)
    assert got.stats.sign_conflict_rate == pytest.approx(dense.stats.sign_conflict_rate)


def test_chunked_with_negative_weight_and_no_normalize():
    bs, as_ = _factors(9, 30, 22, (3, 5))
    for normalize in (True, False):
        p = MethodParams(weights=(1.5, -0.7), densities=(0.3, 0.6), normalize=normalize)
        dense = ties(_stack(bs, as_, 50), p)
        assert_close(ties_from_factors(bs, as_, p, chunk_elements=50).delta, dense.delta, rtol=1e-5, atol=1e-5)
