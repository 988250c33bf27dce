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


# -- the one-pass kernel: trims bracketed from a sample of the factors' entries, fixed up after the pass ----------
def _two_pass(bs, as_, p, chunk):
    """The two-pass kernel (exact thresholds selected first) on the same chunks: the one-pass result must equal it."""
    from tiesmerge.merge.chunked import thresholds
    return ties_from_factors(bs, as_, p, chunk_elements=chunk, limits=thresholds(bs, as_, p.densities, chunk_rows(as_[0].shape[1], chunk)))


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("sign", [SignRule.sum, SignRule.count])
@pytest.mark.parametrize("chunk", [1 << 24, 37, 500])
def test_one_pass_equals_dense_bitwise(integer, sign, chunk, monkeypatch):
    """A sample of 64 entries per adapter forces the one-pass path on a 90 × 70 module; integer factors put thousands
    of exact ties at the thresholds (kept bracketed here, so the tie quota is settled after the pass, in index
    order; by default such tie blocks take an exact threshold)."""
    from tiesmerge.merge import chunked

    monkeypatch.setattr(chunked, "MAX_TIED", 1.0)
    monkeypatch.setattr(chunked, "MAX_INSIDE", 1.0)  # a 64-entry sample's brackets hold most of this small ΔW
    monkeypatch.setattr(chunked, "thresholds", _no_exact_selection)
    bs, as_ = _factors(11, 90, 70, (4, 7, 2, 5), integer=integer)
    p = MethodParams(weights=(0.5, 1.2, 0.3, 0.8), densities=(0.2, 0.45, 1.0, 0.05), lam=1.3, sign=sign)
    got = ties_from_factors(bs, as_, p, chunk_elements=chunk, sample=64)
    dense = ties(_stack(bs, as_, chunk), p)
    assert torch.equal(got.delta, dense.delta)
    monkeypatch.undo()
    assert torch.equal(got.delta, _two_pass(bs, as_, p, chunk).delta)
    assert got.stats.kept_density == pytest.approx(dense.stats.kept_density, rel=1e-12)
    assert got.stats.sign_conflict_rate == pytest.approx(dense.stats.sign_conflict_rate, rel=1e-12)


def _no_exact_selection(*args):
    raise AssertionError("the one-pass kernel fell back to exact selection")


def test_one_pass_kept_density_is_exact(monkeypatch):
    from tiesmerge.merge import chunked

    monkeypatch.setattr(chunked, "MAX_INSIDE", 1.0)
    monkeypatch.setattr(chunked, "thresholds", _no_exact_selection)
    bs, as_ = _factors(12, 80, 60, (3, 3, 3))
    p = MethodParams(weights=(1.0, 1.0, 1.0), densities=(0.3, 0.3, 0.3))
    got = ties_from_factors(bs, as_, p, chunk_elements=300, sample=64)
    assert got.stats.kept_density == pytest.approx(int(0.3 * 80 * 60) / (80 * 60))


def test_a_bracket_that_misses_falls_back_to_exact_selection(monkeypatch):
    """A sample whose bracket excludes the threshold (here: forced) is detected after the pass and the module is
    merged again with exactly selected thresholds — the same result."""
    from tiesmerge.merge import steps

    bs, as_ = _factors(13, 90, 70, (4, 6))
    p = MethodParams(weights=(0.6, 0.4), densities=(0.25, 0.4))
    want = ties(_stack(bs, as_, 400), p).delta
    monkeypatch.setattr(steps, "bracket", lambda sample, k, n: (float(sample.max()) * 0.99, float(sample.max())))
    assert torch.equal(ties_from_factors(bs, as_, p, chunk_elements=400, sample=64).delta, want)


def test_bracket_holds_the_kth_largest():
    from tiesmerge.merge import steps

    gen = torch.Generator().manual_seed(4)
    values = torch.randn(200_000, generator=gen).abs()
    for k in (1, 40, 40_000, 199_999):
        sample = values[torch.randint(values.numel(), (4096,), generator=gen)]
        lo, hi = steps.bracket(sample, k, values.numel())
        kth = float(torch.sort(values, descending=True).values[k - 1])
        assert lo <= kth <= hi


def test_sampled_magnitudes_are_entries_of_the_product():
    from tiesmerge.merge.chunked import sampled_magnitudes

    b, a = torch.randn(30, 4), torch.randn(4, 20)
    got = sampled_magnitudes(b, a, 500, seed=3)
    full = (b @ a).abs().reshape(-1)
    nearest = (got[:, None] - full[None, :]).abs().min(1).values
    assert float(nearest.max()) < 1e-5


def _mostly_zero(seed):
    """Three adapters: one with a zero-initialised B (ΔW = 0), one whose B has 90 % zero rows, one ordinary."""
    bs, as_ = _factors(seed, 120, 80, (4, 4, 4))
    bs[0] = torch.zeros_like(bs[0])
    bs[1][torch.arange(120) % 10 != 0] = 0
    return bs, as_


def test_blocks_of_equal_magnitudes_take_an_exact_threshold():
    """When many entries share the threshold's magnitude (the zeros of an untrained or sparse B) the sample's bracket
    would hold most of ΔW: that adapter's threshold is selected exactly instead, and the result is still exact."""
    from tiesmerge.merge.chunked import Bracket, plan_trims

    bs, as_ = _mostly_zero(21)
    p = MethodParams(weights=(0.3, 0.3, 0.4), densities=(0.2, 0.2, 0.2))
    plan = plan_trims(bs, as_, p.densities, 64, rows=10)
    assert not isinstance(plan[0], Bracket) and not isinstance(plan[1], Bracket) and isinstance(plan[2], Bracket)
    got = ties_from_factors(bs, as_, p, chunk_elements=700, sample=64)
    assert torch.equal(got.delta, ties(_stack(bs, as_, 700), p).delta)


def test_brackets_holding_too_much_fall_back_during_the_pass(monkeypatch):
    """The safety net: if the brackets turn out to hold far more positions than the sample promised, the pass stops
    and the module is merged with exact thresholds (same result, bounded memory)."""
    from tiesmerge.merge import chunked

    monkeypatch.setattr(chunked, "MAX_TIED", 1.0)  # keep the zero adapters bracketed: their bracket holds all of ΔW
    bs, as_ = _mostly_zero(22)
    p = MethodParams(weights=(0.3, 0.3, 0.4), densities=(0.2, 0.2, 0.2))
    calls = []
    real = chunked.thresholds
    monkeypatch.setattr(chunked, "thresholds", lambda *a: calls.append(1) or real(*a))
    got = ties_from_factors(bs, as_, p, chunk_elements=700, sample=64)
    assert calls and torch.equal(got.delta, ties(_stack(bs, as_, 700), p).delta)


def test_an_exact_threshold_with_ties_beside_bracketed_adapters(monkeypatch):
    """An adapter with many tied magnitudes above 0 (integer-like values) takes an exact threshold whose tie quota the
    pass spends in index order; where the pass fixes up bracketed positions, that adapter's trims must be the ones
    the pass made."""
    from tiesmerge.merge import chunked
    from tiesmerge.merge.chunked import Bracket, plan_trims

    monkeypatch.setattr(chunked, "MAX_INSIDE", 1.0)
    gen = torch.Generator().manual_seed(23)
    ints, _ = _factors(23, 90, 70, (3,), integer=True)
    bs = [ints[0], torch.randn(90, 4, generator=gen), torch.randn(90, 2, generator=gen)]
    as_ = [torch.randint(-2, 3, (3, 70), generator=gen).float(), torch.randn(4, 70, generator=gen),
           torch.randn(2, 70, generator=gen)]
    p = MethodParams(weights=(0.5, 0.3, 0.2), densities=(0.3, 0.3, 0.5))
    plan = plan_trims(bs, as_, p.densities, 64, rows=10)
    assert not isinstance(plan[0], Bracket) and plan[0][0] > 0 and plan[0][1] > 0  # exact, ties at a positive threshold
    assert isinstance(plan[1], Bracket)
    for chunk in (700, 1 << 20):
        got = ties_from_factors(bs, as_, p, chunk_elements=chunk, sample=64)
        dense = ties(_stack(bs, as_, chunk), p)
        assert torch.equal(got.delta, dense.delta)
        assert got.stats.kept_density == pytest.approx(dense.stats.kept_density, rel=1e-12)
        assert got.stats.sign_conflict_rate == pytest.approx(dense.stats.sign_conflict_rate, rel=1e-12)
