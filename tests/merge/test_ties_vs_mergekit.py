"""The native TIES kernel equals mergekit 0.1.5's `ties` on the same ΔW stacks."""

from __future__ import annotations

import pytest
import torch
from mergekit.merge_methods.api import merge_tensors
from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod, GeneralizedTaskArithmeticMerge
from mergekit.sparsify import SparsificationMethod
from torch.testing import assert_close

from tiesmerge.merge import steps
from tiesmerge.merge.methods.ties import ties
from tiesmerge.merge.types import MethodParams, SignRule

# mergekit registers TIES with the sum rule only; its generalized kernel with `count` is the reference for count.
TIES_COUNT = GeneralizedTaskArithmeticMerge(
    consensus_method=ConsensusMethod.count, sparsification_method=SparsificationMethod.magnitude,
    default_normalize=True, default_rescale=False, method_name="ties_count",
    method_pretty_name=None, method_reference_url=None,
)


def reference(deltas, weights, densities, lam, sign, normalize=True):
    method = "ties" if sign is SignRule.sum else TIES_COUNT
    return merge_tensors(
        [torch.zeros_like(deltas[0]), *deltas], method, base_index=0,
        parameters={"density": list(densities), "weight": list(weights), "lambda": lam, "normalize": normalize},
    )


CASES = [
    # shape, weights, densities, lambda
    ((17, 23), (1.0, 1.0, 1.0), (0.2, 0.2, 0.2), 1.0),
    ((64, 32), (0.25, 0.25, 0.25, 0.25), (0.5, 0.5, 0.5, 0.5), 1.0),
    ((40, 96), (0.7, 0.2, 1.3), (0.1, 0.35, 0.9), 1.7),
    ((8, 8), (2.0, -0.5), (0.3, 1.0), 0.5),
    ((128, 33), (1.0,), (0.05,), 1.0),
    ((31, 29), (0.3, 0.3, 0.4, 0.1, 0.9), (1.0, 0.001, 0.5, 0.75, 0.2), 2.0),
]


@pytest.mark.parametrize("sign", [SignRule.sum, SignRule.count])
@pytest.mark.parametrize("shape,weights,densities,lam", CASES)
def test_native_ties_equals_mergekit(shape, weights, densities, lam, sign):
    gen = torch.Generator().manual_seed(hash((shape, weights)) % 2**31)
    # rank-deficient deltas (like LoRA ΔW) plus a shared component so the signs partly agree
    shared = torch.randn(shape[0], 3, generator=gen) @ torch.randn(3, shape[1], generator=gen)
    deltas = torch.stack([
        shared * (0.5 + i) + torch.randn(shape[0], 4, generator=gen) @ torch.randn(4, shape[1], generator=gen)
        for i in range(len(weights))
    ])
    got = ties(deltas, MethodParams(weights=weights, densities=densities, lam=lam, sign=sign)).delta
    want = reference(deltas, weights, densities, lam, sign)
    assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    assert got.abs().sum() > 0


@pytest.mark.parametrize("normalize", [True, False])
def test_normalize_flag_matches_mergekit(normalize):
    gen = torch.Generator().manual_seed(7)
    deltas = torch.randn(3, 20, 30, generator=gen)
    p = MethodParams(weights=(0.5, 1.0, 1.5), densities=(0.4, 0.4, 0.4), normalize=normalize)
    want = reference(deltas, p.weights, p.densities, 1.0, SignRule.sum, normalize=normalize)
    assert_close(ties(deltas, p).delta, want, rtol=1e-5, atol=1e-6)


def test_trim_keeps_exactly_k_largest_by_hand():
    x = torch.tensor([[0.1, -5.0, 3.0], [-0.2, 4.0, 0.05]])
    mask = steps.magnitude_mask(x, 0.5)  # k = int(0.5 * 6) = 3
    assert mask.tolist() == [[False, True, True], [False, True, False]]


def test_trim_ties_at_threshold_keep_exactly_k():
    x = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0])
    mask = steps.magnitude_mask(x, 0.6)  # k = 3: 3.0 and two of the tied 2.0s
    assert int(mask.sum()) == 3 and bool(mask[4])


def test_hand_computed_ties():
    # two adapters, density 1: entries agree → mean; disagree → the elected (sum) sign's entry
    d = torch.tensor([[[1.0, 2.0, -1.0]], [[3.0, -1.0, -3.0]]])
    out = ties(d, MethodParams(weights=(1.0, 1.0), densities=(1.0, 1.0))).delta
    # col0: both +, mean 2; col1: sum +1 → keep +2 only; col2: both −, mean −2
    assert_close(out, torch.tensor([[2.0, 2.0, -2.0]]))
    stats = ties(d, MethodParams(weights=(1.0, 1.0), densities=(1.0, 1.0))).stats
    assert stats.sign_conflict_rate == pytest.approx(1 / 6)
    assert stats.kept_density == pytest.approx(1.0)


def test_count_rule_differs_from_sum_by_hand():
    # one big positive vs two small negatives: sum elects +, count elects −
    d = torch.tensor([[[10.0]], [[-1.0]], [[-2.0]]])
    w = (1.0, 1.0, 1.0)
    assert ties(d, MethodParams(weights=w, densities=(1.0,) * 3, sign=SignRule.sum)).delta.item() == 10.0
    assert ties(d, MethodParams(weights=w, densities=(1.0,) * 3, sign=SignRule.count)).delta.item() == -1.5


@pytest.mark.parametrize("n,k", [(2_000_000, 400_000), (2_000_000, 1), (2_000_000, 1_999_999), (1_000_003, 777)])
def test_kth_largest_bracketed_selection_is_exact(n, k):
    gen = torch.Generator().manual_seed(n + k)
    values = torch.randn(n, generator=gen).abs()
    values[:1000] = values[5000]  # a block of exact ties
    want = torch.sort(values, descending=True).values[k - 1]
    assert steps.kth_largest(values, k) == want
