"""TIES against numbers a reference produced once (torchtune's way): three 4 × 6 task deltas given by a formula
(`entry`), merged by mergekit 0.1.5's `merge_tensors("ties", [zeros, *deltas], base_index=0, parameters={density,
weight, lambda, normalize: true})` in float64 (as tests/merge/test_ties_vs_mergekit.py calls it), pasted here.
This module needs neither mergekit nor PEFT, so `make test-min` checks the native kernel — dense and built from
factors — against an independent result too."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.merge.chunked import ties_from_factors
from tiesmerge.merge.methods.ties import ties
from tiesmerge.merge.types import MethodParams, SignRule

pytestmark = pytest.mark.core

def entry(t: int, i: int, j: int) -> float:
    """Task t's ΔW[i, j]: 24 distinct magnitudes per task (no ties at a trim threshold), signs that disagree."""
    n = t * 24 + i * 6 + j
    return (1 if (n * n + 3 * t + i) % 3 else -1) * ((29 * n + 11) % 97 + 1) / 60


DELTAS = [[[entry(t, i, j) for j in range(6)] for i in range(4)] for t in range(3)]

# (weights, densities, lambda) → mergekit's merged ΔW
MERGEKIT = {
    ((0.5, 0.3, 0.2), (0.5, 0.5, 0.5), 1.0): [
        [-0.76666667, 1.08, 1.27291667, 0.0, 1.08333333, 1.19833333],
        [1.48333333, 0.91666667, 1.03166667, 1.42291667, 0.0, 1.06333333],
        [1.25625, 0.0, -1.06666667, 1.18166667, -1.46666667, -0.9],
        [-1.015, 1.40625, 0.0, -1.04666667, 1.23958333, 1.61666667]],
    ((1.0, 1.0, 1.0), (0.25, 0.5, 0.75), 0.8): [
        [-0.61333333, 0.88666667, 1.04666667, -0.48, 0.86666667, 1.14],
        [0.76666667, 0.73333333, 1.00666667, 1.16666667, 0.6, 0.87333333],
        [1.14666667, -0.46666667, -0.85333333, 1.12666667, -1.17333333, -0.72],
        [-0.99333333, 1.15333333, 0.58666667, -0.86, 1.13333333, 0.87333333]],
}


@pytest.mark.parametrize("setting", list(MERGEKIT), ids=["weighted-d0.5", "uneven-densities-l0.8"])
def test_ties_equals_mergekits_recorded_result(setting):
    weights, densities, lam = setting
    deltas = torch.tensor(DELTAS, dtype=torch.float32)
    p = MethodParams(weights=weights, densities=densities, lam=lam, sign=SignRule.sum, normalize=True)
    want = torch.tensor(MERGEKIT[setting])
    assert_close(ties(deltas, p).delta, want, rtol=1e-6, atol=1e-6)
    # the chunked kernel from LoRA factors: ΔW_t = B_t A_t with B_t = ΔW_t, A_t = I (rank 6)
    eye = torch.eye(6)
    got = ties_from_factors([d.clone() for d in deltas], [eye] * 3, p).delta
    assert_close(got, want, rtol=1e-6, atol=1e-6)
