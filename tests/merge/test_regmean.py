"""RegMean in LoRA form against references written here: the paper's closed form on dense ΔW and fusion-bench's
`merging_with_regmean_weights` recipe (inverse of the summed Grams times the summed Gram-weighted weightsᵀ, on the
full weights W0 + ΔW_t); core space against full space when the inputs lie in the span of the A rows."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import regmean_reference
from tiesmerge.merge.core_space import core_space
from tiesmerge.merge.methods.regmean import regmean_core, regmean_factors
from tiesmerge.merge.types import MethodParams

pytestmark = pytest.mark.core

D_OUT, D_IN = 24, 20


def adapters(seed: int, ranks=(3, 5, 2)):
    g = torch.Generator().manual_seed(seed)
    bs = [torch.randn(D_OUT, r, generator=g, dtype=torch.float64) * 0.7 for r in ranks]
    as_ = [torch.randn(r, D_IN, generator=g, dtype=torch.float64) for r in ranks]
    grams = []
    for k in range(len(ranks)):
        x = torch.randn(60, D_IN, generator=g, dtype=torch.float64) * (1 + k) + torch.linspace(-1, 1, D_IN)
        grams.append(x.T @ x / 60)
    return bs, as_, grams


def params(n, off=1.0, lam=1.0, weights=None):
    return MethodParams(weights=tuple(weights or [1.0] * n), densities=(1.0,) * n, lam=lam,
                        options={} if off is None else {"off_diagonal": off})


def paper(deltas, grams, a, weights):
    """Jin et al. 2023, eq. (2): W* = (Σ G̃_t)⁻¹ Σ G̃_t W_t in their x W layout; here ΔW* = (Σ ΔW_t G̃_t)(Σ G̃_t)⁻¹."""
    gt = [w * (a * g + (1 - a) * torch.diag(torch.diag(g))) for g, w in zip(grams, weights)]
    return sum(d @ g for d, g in zip(deltas, gt)) @ torch.linalg.inv(sum(gt))


def fusion_bench_style(weights_full, grams, ratio):
    """fusion-bench 0.2.x: off-diagonals × ratio, merged = inv(ΣG̃) @ Σ G̃ Wᵀ, transposed back."""
    reduced = [g * (torch.diag(torch.ones(g.shape[0], dtype=g.dtype) - ratio) + ratio) for g in grams]
    merged = torch.linalg.inv(sum(reduced)) @ sum(g @ w.T for g, w in zip(reduced, weights_full))
    return merged.T


@pytest.mark.parametrize("off", [1.0, 0.6])
def test_regmean_factors_equal_the_papers_closed_form(off):
    bs, as_, grams = adapters(0)
    b, a = regmean_factors(bs, as_, grams, params(3, off, lam=1.3))
    assert b.shape[1] == sum(x.shape[0] for x in as_)  # exactly rank Σ r
    deltas = [bb @ aa for bb, aa in zip(bs, as_)]
    assert_close(b.double() @ a.double(), 1.3 * regmean_reference(deltas, grams, off_diagonal=off), rtol=1e-5,
                 atol=1e-6)
    # full-rank, well-conditioned Grams: the floor (10⁻⁶ of the spectrum's top) moves the paper's answer by < 10⁻⁴
    expected = 1.3 * paper(deltas, grams, off, [1.0] * 3)
    assert (b.double() @ a.double() - expected).norm() < 1e-4 * expected.norm()


def test_regmean_equals_fusion_bench_on_full_weights():
    bs, as_, grams = adapters(1)
    w0 = torch.randn(D_OUT, D_IN, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    fb = fusion_bench_style([w0 + bb @ aa for bb, aa in zip(bs, as_)], grams, 0.8)
    b, a = regmean_factors(bs, as_, grams, params(3, 0.8))
    assert (w0 + b.double() @ a.double() - fb).norm() < 1e-4 * (fb - w0).norm()


def test_adapter_weights_weigh_the_grams():
    bs, as_, grams = adapters(2)
    b, a = regmean_factors(bs, as_, grams, params(3, weights=[0.2, 1.0, 3.0]))
    expected = regmean_reference([bb @ aa for bb, aa in zip(bs, as_)], grams, [0.2, 1.0, 3.0])
    assert_close(b.double() @ a.double(), expected, rtol=1e-5, atol=1e-6)


def test_one_adapter_merges_to_itself_and_order_does_not_matter():
    bs, as_, grams = adapters(3)
    b, a = regmean_factors(bs[:1], as_[:1], grams[:1], params(1))
    assert_close(b.double() @ a.double(), bs[0] @ as_[0], rtol=1e-4, atol=1e-5)
    b1, a1 = regmean_factors(bs, as_, grams, params(3))
    order = [2, 0, 1]
    b2, a2 = regmean_factors([bs[i] for i in order], [as_[i] for i in order], [grams[i] for i in order], params(3))
    assert_close(b1.double() @ a1.double(), b2.double() @ a2.double(), rtol=1e-5, atol=1e-6)


def test_core_space_equals_full_space_when_the_inputs_lie_in_the_span():
    bs, as_, _ = adapters(4, ranks=(2, 3))
    space = core_space([b.float() for b in bs], [a.float() for a in as_])
    q = space.v_a.double()  # d_in × k, the span of the A rows
    g = torch.Generator().manual_seed(5)
    grams = []
    for _ in range(2):
        c = torch.randn(q.shape[1], q.shape[1], generator=g, dtype=torch.float64)
        grams.append(q @ (c @ c.T + torch.eye(q.shape[1], dtype=torch.float64)) @ q.T)
    b, a = regmean_factors(bs, as_, grams, params(2))
    core = regmean_core(space.cores.double(), q, grams, params(2))
    full = b.double() @ a.double()
    from_core = space.u_b.double() @ core @ q.T
    assert_close(from_core, full, rtol=1e-3, atol=1e-4)
    # and off the span the two differ: core space keeps the rows in span(A), full space does not
    x = torch.randn(50, D_IN, generator=g, dtype=torch.float64)
    outside = [x.T @ x / 50, grams[1]]
    b, a = regmean_factors(bs, as_, outside, params(2))
    core = regmean_core(space.cores.double(), q, outside, params(2))
    assert (space.u_b.double() @ core @ q.T - b.double() @ a.double()).norm() > 1e-2 * (b.double() @ a.double()).norm()


# --- exactness on the Grams real calibration produces (issue 31) -------------------------------------------------

def gram_cases(d: int, seed: int) -> dict[str, torch.Tensor]:
    """One layer input's Gram three ways: full rank; rank-deficient (fewer tokens than input features, as every
    72B down_proj and SmolLM2's layer 0 on 40 prompts); and that rank-deficient Gram as float32 accumulation leaves it —
    not symmetric to the last bit, eigenvalues down to −10⁻⁷ of the top."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(0, -2, d, dtype=torch.float64)  # features of unequal size, as a layernorm output has
    full = torch.randn(4 * d, d, generator=g, dtype=torch.float64) * scale
    few = torch.randn(d // 4, d, generator=g, dtype=torch.float64) * scale
    deficient = few.T @ few / few.shape[0]
    noise = torch.randn(d, d, generator=g, dtype=torch.float64) * 1e-7 * float(torch.linalg.matrix_norm(deficient, 2))
    indefinite = (deficient + noise).float()  # asymmetric noise, then float32 storage
    assert torch.linalg.eigvalsh((indefinite.double() + indefinite.double().T) / 2).min() < 0
    return {"full rank": full.T @ full / full.shape[0], "rank-deficient": deficient, "slightly indefinite": indefinite}


@pytest.mark.parametrize("case", ["full rank", "rank-deficient", "slightly indefinite"])
@pytest.mark.parametrize("off", [1.0, 0.5])
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.5]])
def test_identical_grams_give_the_weighted_mean(case, off, weights):
    d = 96
    g = torch.Generator().manual_seed(11)
    bs = [torch.randn(40, r, generator=g, dtype=torch.float64) for r in (4, 6, 8)]
    as_ = [torch.randn(r, d, generator=g, dtype=torch.float64) for r in (4, 6, 8)]
    gram = gram_cases(d, 3)[case]
    w = weights or [1.0] * 3
    b, a = regmean_factors(bs, as_, [gram] * 3, params(3, off, lam=0.7, weights=weights))
    mean = 0.7 * sum(wt * bb @ aa for wt, bb, aa in zip(w, bs, as_)) / sum(w)
    assert (b.double() @ a.double() - mean).abs().max() <= 1e-6 * mean.abs().max()
    # core space: the same, on the cores
    space = core_space([x.float() for x in bs], [x.float() for x in as_])
    core = regmean_core(space.cores.double(), space.v_a.double(), [gram] * 3, params(3, off, weights=weights))
    assert_close(core, sum(wt * m for wt, m in zip(w, space.cores.double())) / sum(w), rtol=1e-6, atol=1e-9)


def test_smollm2_layer0_shape_is_exact_where_the_ridge_solve_was_9x_too_large():
    """The issue's case: two adapters calibrated on the same prompts, a module whose input no adapter changes
    (d_in 576, ~138 tokens, float32 Grams): the answer is the mean ΔW; the old solve (ridge 10⁻⁶ × the mean
    diagonal) was ~10× too large."""
    d, tokens = 576, 138
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(tokens, d, generator=g) * torch.logspace(0, -1.5, d)).float()
    gram = (x.T @ x / tokens).float()  # float32, as stored
    bs = [torch.randn(64, 8, generator=g) * 0.05 for _ in range(2)]
    as_ = [torch.randn(8, d, generator=g) * 0.05 for _ in range(2)]
    b, a = regmean_factors(bs, as_, [gram, gram.clone()], params(2))
    mean = (bs[0].double() @ as_[0].double() + bs[1].double() @ as_[1].double()) / 2
    assert (b.double() @ a.double() - mean).abs().max() <= 1e-6 * mean.abs().max()


def test_a_hand_written_dense_regmean_on_random_grams_of_every_kind():
    """Different Grams per adapter (one rank-deficient, one indefinite, one full), against the dense formula."""
    d = 64
    cases = [gram_cases(d, s) for s in (1, 2, 3)]
    grams = [cases[0]["rank-deficient"], cases[1]["slightly indefinite"], cases[2]["full rank"]]
    g = torch.Generator().manual_seed(4)
    bs = [torch.randn(30, r, generator=g, dtype=torch.float64) for r in (2, 3, 4)]
    as_ = [torch.randn(r, d, generator=g, dtype=torch.float64) for r in (2, 3, 4)]
    for off, weights, lam in ((1.0, [1.0, 1.0, 1.0], 1.0), (0.9, [0.3, 1.0, 2.0], 1.5)):
        b, a = regmean_factors(bs, as_, grams, params(3, off, lam=lam, weights=weights))
        ref = lam * regmean_reference([bb @ aa for bb, aa in zip(bs, as_)], grams, weights, off)
        assert (b.double() @ a.double() - ref).norm() <= 1e-6 * ref.norm()


def test_a_clearly_indefinite_gram_and_non_positive_weights_are_refused():
    bs, as_, grams = adapters(5)
    broken = grams[0] - 2 * torch.linalg.matrix_norm(grams[0], 2) * torch.eye(D_IN, dtype=torch.float64)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        regmean_factors(bs, as_, [broken, broken, broken], params(3))
    with pytest.raises(ValueError, match="weights must be positive"):
        regmean_factors(bs, as_, grams, params(3, weights=[1.0, 0.0, 1.0]))
