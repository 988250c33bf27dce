"""Every registered method: task arithmetic by hand, the mergekit family equal to mergekit on ΔW, seeded."""

from __future__ import annotations

import pytest
import torch
from mergekit.merge_methods.api import merge_tensors
from torch.testing import assert_close

from tiesmerge.merge.methods.mergekit_family import mergekit_method
from tiesmerge.merge.registry import REGISTRY, get
from tiesmerge.merge.types import Method, MethodParams


def _deltas(seed=0, t=3, shape=(24, 40)):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(shape[0], 5, generator=gen) @ torch.randn(5, shape[1], generator=gen) for _ in range(t)])


def test_registry_covers_every_method_enum():
    assert set(REGISTRY) == set(Method)
    for method, spec in REGISTRY.items():
        assert spec.method is method


def test_task_arithmetic_by_hand():
    d = _deltas()
    p = MethodParams(weights=(0.5, -1.0, 2.0), densities=(1.0,) * 3, lam=0.7)
    want = 0.7 * (0.5 * d[0] - 1.0 * d[1] + 2.0 * d[2])
    assert_close(get(Method.task_arithmetic).dense(d, p).delta, want)
    pn = MethodParams(weights=(1.0, 1.0, 2.0), densities=(1.0,) * 3, normalize=True)
    assert_close(get(Method.task_arithmetic).dense(d, pn).delta, (d[0] + d[1] + 2 * d[2]) / 4)


MERGEKIT_CASES = [
    (Method.dare_ties, {"density": 0.5}),
    (Method.dare_linear, {"density": 0.3}),
    (Method.breadcrumbs, {"density": 0.6, "gamma": 0.05}),
    (Method.breadcrumbs_ties, {"density": 0.6, "gamma": 0.02}),
    (Method.della, {"density": 0.5, "epsilon": 0.1}),
    (Method.della_linear, {"density": 0.4, "epsilon": 0.2}),
    (Method.magnitude_prune, {"density": 0.25}),
]


@pytest.mark.parametrize("method,extra", MERGEKIT_CASES)
def test_mergekit_family_equals_direct_mergekit_call(method, extra):
    d = _deltas(seed=3)
    weights = (0.3, 0.5, 0.2)
    p = MethodParams(weights=weights, densities=(extra["density"],) * 3, seed=1234,
                     options={k: v for k, v in extra.items() if k in ("gamma", "epsilon")})
    got = get(method).dense(d, p).delta
    params = {"weight": list(weights), "density": [extra["density"]] * 3, "lambda": 1.0}
    params.update({k: [v] * 3 for k, v in extra.items() if k in ("gamma", "epsilon")})
    torch.manual_seed(1234)
    want = merge_tensors([torch.zeros_like(d[0]), *d], mergekit_method(method), base_index=0, parameters=params)
    assert_close(got, want)
    assert 0 < float((got != 0).float().mean()) <= 1


@pytest.mark.parametrize("method", [Method.dare_ties, Method.della])
def test_random_methods_are_seeded_and_leave_global_rng_alone(method):
    d = _deltas(seed=5)
    p = MethodParams(weights=(1.0, 1.0, 1.0), densities=(0.5,) * 3, seed=99)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = get(method).dense(d, p).delta
    after = torch.rand(1)
    b = get(method).dense(d, p).delta
    c = get(method).dense(d, MethodParams(weights=(1.0,) * 3, densities=(0.5,) * 3, seed=100)).delta
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(before, after)  # the global generator was not advanced


def test_magnitude_prune_by_hand():
    d = torch.tensor([[[1.0, -4.0, 2.0, 0.5]], [[-3.0, 1.0, 0.1, 2.0]]])
    p = MethodParams(weights=(1.0, 0.5), densities=(0.5, 0.5))
    # adapter 0 keeps -4, 2; adapter 1 keeps -3, 2 (× 0.5)
    assert_close(get(Method.magnitude_prune).dense(d, p).delta, torch.tensor([[-1.5, -4.0, 2.0, 1.0]]))
