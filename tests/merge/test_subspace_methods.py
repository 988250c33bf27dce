"""The subspace methods (TSV-M, Iso-C, Iso-CTS, KnOTS): equal to fusion-bench 0.2.33's dense utilities where their
assumptions hold (every matrix of full rank), to a KnOTS reference written here from the paper, and — the LoRA-aware
rule — the same in core space as on the dense ΔW; identities; and the merged adapter as PEFT loads it."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.merge.core_space import core_space
from tiesmerge.merge.registry import get
from tiesmerge.merge.types import Method, MethodParams, SignRule

SUBSPACE = (Method.tsv, Method.iso_c, Method.iso_cts, Method.knots_ties, Method.knots_dare, Method.knots_linear)


def lora_stack(seed, t=2, m=16, n=16, r=8):
    """T low-rank updates B_t A_t (float64) and their factors."""
    gen = torch.Generator().manual_seed(seed)
    bs = [torch.randn(m, r, generator=gen, dtype=torch.float64) for _ in range(t)]
    as_ = [torch.randn(r, n, generator=gen, dtype=torch.float64) / 4 for _ in range(t)]
    return torch.stack([b @ a for b, a in zip(bs, as_)]), bs, as_


def params(t, **kw):
    options = {k: kw.pop(k) for k in ("common_fraction",) if k in kw}  # a method's own parameter
    return MethodParams(weights=(1.0,) * t, densities=(kw.pop("density", 1.0),) * t, options=options, **kw)


# -- fusion-bench references (dense; full-rank cases, where its assumptions hold) ----------------
@pytest.fixture(scope="module")
def fusion():
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.isotropic_merging import iso_utils
    from fusion_bench.method.task_singular_vector.utils import TSVM_utils

    return iso_utils, TSVM_utils


def test_tsv_equals_fusion_bench(fusion):
    _, tsvm = fusion
    deltas, _, _ = lora_stack(0)  # 16 × 16, rank 8 each: ⌊16 / 2⌋ = 8 real directions per task
    want = tsvm.compute_and_sum_svd_mem_reduction([{"w": d} for d in deltas], accelerator="cpu")["w"]
    got = get(Method.tsv).dense(deltas, params(2)).delta
    assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_iso_c_equals_fusion_bench(fusion):
    iso, _ = fusion
    deltas, _, _ = lora_stack(1)  # the sum of two rank-8 updates has full rank 16
    want = iso.iso_c([{"w": d} for d in deltas], accelerator="cpu")["w"]
    assert_close(get(Method.iso_c).dense(deltas, params(2)).delta, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("fraction", [0.8, 0.5])
def test_iso_cts_equals_fusion_bench(fusion, fraction):
    iso, _ = fusion
    deltas, _, _ = lora_stack(2, t=3, m=18, n=24, r=6)  # sum of rank 18 = min(shape): full rank
    want = iso.iso_cts([{"w": d} for d in deltas], common_space_fraction=fraction, accelerator="cpu")["w"]
    got = get(Method.iso_cts).dense(deltas, params(3, common_fraction=fraction)).delta
    assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_dense_iso_c_on_a_low_rank_sum_is_full_rank_ours_is_not(fusion):
    """Why the LoRA-aware rule: fusion-bench flattens the zero singular values too."""
    iso, _ = fusion
    deltas, _, _ = lora_stack(3, t=2, m=40, n=30, r=4)  # the sum has rank 8 of 30
    dense = iso.iso_c([{"w": d} for d in deltas], accelerator="cpu")["w"]
    ours = get(Method.iso_c).dense(deltas, params(2)).delta
    assert torch.linalg.matrix_rank(dense) == 30 and torch.linalg.matrix_rank(ours) == 8
    s = torch.linalg.svdvals(ours)
    assert_close(s[:8], torch.full((8,), float(torch.linalg.svdvals(deltas.sum(0))[:8].mean()), dtype=s.dtype))


# -- KnOTS: a reference written from the paper --------------------------------------------------
def knots_reference(deltas, weights, density, lam):
    """Concatenate, SVD, represent task t by Σ V_tᵀ, TIES by a full sort (mass sign, disjoint weighted mean), U·."""
    t, m, n = deltas.shape
    u, s, vh = torch.linalg.svd(torch.cat(list(deltas), 1), full_matrices=False)
    keep = s > 1e-6 * s[0]
    u, s, vh = u[:, keep], s[keep], vh[keep]
    reps = [torch.diag(s) @ vh[:, i * n:(i + 1) * n] for i in range(t)]
    taus = []
    for rep, w in zip(reps, weights):
        flat = rep.reshape(-1)
        k = max(1, int(density * flat.numel()))
        mask = torch.zeros_like(flat)
        mask[torch.argsort(flat.abs(), descending=True)[:k]] = 1
        taus.append(w * (flat * mask).reshape(rep.shape))
    stack = torch.stack(taus)
    sign = torch.where(stack.sum(0) >= 0, 1.0, -1.0).double()
    agree = (stack.sign() == sign).double()
    wsum = (torch.tensor(weights, dtype=torch.float64).reshape(-1, 1, 1) * agree).sum(0)
    wsum[wsum == 0] = 1
    return lam * u @ ((stack * agree).sum(0) / wsum)


@pytest.mark.parametrize("density,lam", [(0.3, 1.0), (1.0, 0.7)])
def test_knots_ties_equals_the_paper(density, lam):
    deltas, _, _ = lora_stack(4, t=3, m=20, n=12, r=3)
    weights = (0.5, 0.3, 0.2)
    p = MethodParams(weights=weights, densities=(density,) * 3, lam=lam, sign=SignRule.sum, normalize=True)
    got = get(Method.knots_ties).dense(deltas, p).delta
    assert_close(got, knots_reference(deltas, list(weights), density, lam), atol=1e-9, rtol=1e-9)


def test_knots_linear_is_task_arithmetic_and_dare_at_density_one_is_knots_ties():
    deltas, _, _ = lora_stack(5, t=3, m=20, n=12, r=3)
    p = MethodParams(weights=(0.5, 0.3, 0.2), densities=(1.0,) * 3, lam=1.3, normalize=True)
    assert_close(get(Method.knots_linear).dense(deltas, p).delta, 1.3 * (0.5 * deltas[0] + 0.3 * deltas[1] +
                                                                         0.2 * deltas[2]), atol=1e-9, rtol=1e-9)
    assert_close(get(Method.knots_dare).dense(deltas, p).delta, get(Method.knots_ties).dense(deltas, p).delta)


def test_knots_dare_drops_about_one_minus_density_and_is_seeded():
    deltas, _, _ = lora_stack(6, t=2, m=30, n=30, r=6)
    p = MethodParams(weights=(1.0, 1.0), densities=(0.4, 0.4), seed=7, normalize=True)
    a = get(Method.knots_dare).dense(deltas, p)
    b = get(Method.knots_dare).dense(deltas, p)
    c = get(Method.knots_dare).dense(deltas, MethodParams(weights=(1.0, 1.0), densities=(0.4, 0.4), seed=8))
    assert torch.equal(a.delta, b.delta) and not torch.equal(a.delta, c.delta)
    assert a.stats.kept_density == pytest.approx(0.4, abs=0.05)


# -- core space = dense within the span; identities -----------------------------------------------
@pytest.mark.parametrize("method", [Method.tsv, Method.iso_c, Method.iso_cts, Method.knots_linear])
def test_core_space_equals_the_dense_computation(method):
    gen = torch.Generator().manual_seed(11)
    ranks = (4, 6, 3)
    bs = [torch.randn(40, r, generator=gen) for r in ranks]
    as_ = [torch.randn(r, 48, generator=gen) / 5 for r in ranks]
    p = MethodParams(weights=(0.5, 1.0, 0.8), densities=(1.0,) * 3, lam=0.9, options={"common_fraction": 0.5})
    dense = get(method).dense(torch.stack([b @ a for b, a in zip(bs, as_)]), p).delta
    space = core_space(bs, as_)
    core = space.u_b @ get(method).dense(space.cores, p).delta @ space.v_a.T
    assert_close(core, dense, atol=2e-5 * float(dense.abs().max()), rtol=0)


@pytest.mark.parametrize("method", [Method.tsv, Method.knots_ties, Method.knots_linear])
def test_one_adapter_is_reproduced(method):
    deltas, _, _ = lora_stack(8, t=1, m=20, n=14, r=5)
    got = get(method).dense(deltas, params(1, normalize=True)).delta
    assert_close(got, deltas[0], atol=1e-9, rtol=1e-9)


def test_iso_c_of_one_adapter_flattens_its_spectrum():
    deltas, _, _ = lora_stack(9, t=1, m=20, n=14, r=5)
    s = torch.linalg.svdvals(get(Method.iso_c).dense(deltas, params(1)).delta)
    want = torch.linalg.svdvals(deltas[0])[:5].mean()
    assert_close(s[:5], want.expand(5))
    assert float(s[5:].abs().max()) < 1e-9


# -- through the CLI, loaded by PEFT ------------------------------------------------------------
@pytest.mark.parametrize("method,space", [(Method.tsv, "core"), (Method.iso_cts, "core"), (Method.knots_ties, "full"),
                                          (Method.iso_c, "full")])
def test_the_merged_adapter_loads_in_peft_with_the_reported_delta(adapter_set, tiny_base, tmp_path, method, space):
    from tests.cli.helpers import run_cli
    from tests.conftest import peft_deltas

    names = ("rs8", "plain4")
    out = tmp_path / "m"
    extra = ("--density", "0.5") if method is Method.knots_ties else ()
    res = run_cli("merge", "--adapter", f"rs8={adapter_set['rs8']}:0.6", "--adapter",
                  f"plain4={adapter_set['plain4']}:0.4", "--method", method.value, "--space", space, "--rank", "full",
                  "--lambda", "0.8", *extra, "-o", out)
    assert res.exit_code == 0, res.stderr
    inputs = [peft_deltas(tiny_base, adapter_set[n]) for n in names]
    merged = peft_deltas(tiny_base, out)
    p = MethodParams(weights=(0.6, 0.4), densities=(0.5 if extra else 1.0,) * 2, lam=0.8, normalize=True)
    report = json.loads((out / "merge_report.json").read_text())
    for module, delta in merged.items():
        stack = torch.stack([d[module] for d in inputs]).double()
        want = get(method).dense(stack, p).delta  # core space: the same maths (tested above)
        assert_close(delta.double(), want, atol=2e-4 * float(want.abs().max()), rtol=0)
        if space == "core":
            assert report["modules"][module]["rank"] <= 8 + 4  # ≤ Σ r_i
