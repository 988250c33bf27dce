"""The CUDA merge path gives the CPU path's result (run on a GPU machine: pytest -m gpu)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.adapters.synthetic import SHAPES, write_synthetic_adapter
from tiesmerge.configs import recipe_from_dict
from tiesmerge.merge.job import prepare
from tiesmerge.merge.methods.ties import ties
from tiesmerge.merge.module import merge_module
from tiesmerge.merge.types import MethodParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_native_ties_on_cuda_equals_cpu():
    gen = torch.Generator().manual_seed(0)
    deltas = torch.randn(4, 300, 200, generator=gen)
    p = MethodParams(weights=(0.25,) * 4, densities=(0.2,) * 4)
    cpu = ties(deltas, p).delta
    gpu = ties(deltas.cuda(), p).delta.cpu()
    assert_close(gpu, cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method,rank", [("ties", 8), ("ties", "full"), ("task_arithmetic", 8)])
def test_driver_on_cuda_equals_cpu(tmp_path, method, rank):
    for i in range(3):
        write_synthetic_adapter(tmp_path / f"a{i}", SHAPES["tiny"], r=8, adapter_seed=i + 1)
    data = {"method": method, "adapters": [{"path": f"a{i}", "weight": 0.3 + 0.1 * i} for i in range(3)],
            "output": {"rank": rank, "svd": "exact"}}
    if method == "ties":
        data["parameters"] = {"density": 0.3}
    job = prepare(recipe_from_dict(data, "t", tmp_path))
    for module in job.plan.modules:
        fc, rc = merge_module(job, module, torch.device("cpu"))
        fg, rg = merge_module(job, module, torch.device("cuda"))
        assert rg.rank == rc.rank
        assert rg.retained_energy == pytest.approx(rc.retained_energy, rel=1e-4)
        assert_close((fg.B @ fg.A).cpu(), fc.B @ fc.A, rtol=1e-4, atol=1e-5 * float((fc.B @ fc.A).abs().max()))
