"""A set of PEFT adapters (different r and α, RSLoRA and plain mixed) merged by the CLI, checked through PEFT."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mergekit.merge_methods.api import merge_tensors
from safetensors.torch import load_file
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.conftest import peft_deltas

WEIGHTS = {"rs8": 0.4, "plain4": 0.3, "rs16": 0.2, "pattern": 0.6}


def independent_ties(tiny_base, adapter_set, names, density, lam=1.0):
    """ΔW-space TIES from PEFT-loaded deltas, with mergekit's kernel as the reference."""
    deltas = {n: peft_deltas(tiny_base, adapter_set[n]) for n in names}
    out = {}
    for module in deltas[names[0]]:
        stack = [deltas[n][module] for n in names]
        out[module] = merge_tensors(
            [torch.zeros_like(stack[0]), *stack], "ties", base_index=0,
            parameters={"density": density, "weight": [WEIGHTS[n] for n in names], "lambda": lam, "normalize": True},
        )
    return out


def write_recipe(path, adapter_set, names, **output):
    recipe = {
        "method": "ties",
        "parameters": {"trim": 0.6, "lambda": 1.3},  # trim 0.6 == density 0.4
        "adapters": [{"name": n, "path": str(adapter_set[n]), "weight": WEIGHTS[n]} for n in names],
        "output": output,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_full_rank_ties_of_four_adapters_equals_independent_ties(tiny_base, adapter_set, tmp_path):
    names = ["rs8", "plain4", "rs16", "pattern"]
    recipe = write_recipe(tmp_path / "r.yaml", adapter_set, names, rank="full", dtype="float32")
    out = tmp_path / "merged"
    res = run_cli("merge", recipe, "-o", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    want = independent_ties(tiny_base, adapter_set, names, density=0.4, lam=1.3)
    got = peft_deltas(tiny_base, out)
    assert set(got) == set(want)
    for module in want:
        assert_close(got[module], want[module], rtol=1e-4, atol=1e-5 * float(want[module].abs().max()))
    report = json.loads((out / "merge_report.json").read_text())
    assert report["summary"]["modules"] == 14
    for module, row in report["modules"].items():
        assert row["retained_energy"] == pytest.approx(1.0, abs=1e-5)
        assert 0 < row["sign_conflict_rate"] < 1
        assert row["kept_density"] == pytest.approx(0.4, abs=0.01)
        assert row["n_adapters"] == 4
        assert row["delta_norm"] == pytest.approx(float(torch.linalg.matrix_norm(want[module])), rel=1e-4)


def test_int_and_auto_rank_outputs_load_in_peft_with_reported_error(tiny_base, adapter_set, tmp_path):
    names = ["rs8", "rs16"]
    want = independent_ties(tiny_base, adapter_set, names, density=0.4, lam=1.3)
    for output, check_rank in (({"rank": 5}, lambda r: r == 5), ({"rank": "auto", "energy": 0.9, "max_rank": 12}, lambda r: 1 <= r <= 12)):
        recipe = write_recipe(tmp_path / "r.yaml", adapter_set, names, **output)
        out = tmp_path / f"merged_{output['rank']}"
        res = run_cli("merge", recipe, "-o", out)
        assert res.exit_code == 0, res.output
        got = peft_deltas(tiny_base, out)  # PEFT applies rank_pattern / alpha_pattern: scaling must be 1
        report = json.loads((out / "merge_report.json").read_text())["modules"]
        tensors = load_file(out / "adapter_model.safetensors")
        for module, row in report.items():
            assert check_rank(row["rank"])
            assert tensors[f"base_model.model.{module}.lora_A.weight"].shape[0] == row["rank"]
            err = float(torch.linalg.matrix_norm(got[module] - want[module]) / torch.linalg.matrix_norm(want[module]))
            assert err == pytest.approx(row["rel_frobenius_error"], rel=1e-3, abs=1e-5)
            if output["rank"] == "auto":
                assert row["retained_energy"] >= 0.9 - 1e-6 or row["rank"] == 12


def test_task_arithmetic_full_rank_is_exact_concatenation(tiny_base, adapter_set, tmp_path):
    names = ["rs8", "plain4", "pattern"]
    out = tmp_path / "ta"
    args = ["merge", "--method", "task_arithmetic", "--rank", "full", "--lambda", "0.5", "-o", out]
    for n in names:
        args += ["--adapter", f"{n}={adapter_set[n]}:{WEIGHTS[n]}"]
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    deltas = {n: peft_deltas(tiny_base, adapter_set[n]) for n in names}
    got = peft_deltas(tiny_base, out)
    tensors = load_file(out / "adapter_model.safetensors")
    inputs = {n: load_file(adapter_set[n] / "adapter_model.safetensors") for n in names}
    for module, delta in got.items():
        want = 0.5 * sum(WEIGHTS[n] * deltas[n][module] for n in names)
        assert_close(delta, want, rtol=1e-5, atol=1e-6)
        key = f"base_model.model.{module}.lora_A.weight"
        assert tensors[key].shape[0] == sum(inputs[n][key].shape[0] for n in names)  # rank Σ r_i, no SVD


def test_module_in_only_some_adapters_merges_over_those(tiny_base, adapter_set, tmp_path):
    from tests.conftest import make_peft_adapter

    partial = make_peft_adapter(tiny_base, tmp_path / "qonly", seed=9, r=4, alpha=4, rslora=False, targets=("q_proj",))
    out = tmp_path / "m"
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}:1", "--adapter", f"b={partial}:1",
                  "--method", "ties", "--density", "1", "--rank", "full", "-o", out)
    assert res.exit_code == 0, res.output
    a = peft_deltas(tiny_base, adapter_set["rs8"])
    b = peft_deltas(tiny_base, partial)
    got = peft_deltas(tiny_base, out)
    assert_close(got["model.layers.0.mlp.up_proj"], a["model.layers.0.mlp.up_proj"], rtol=1e-5, atol=1e-6)
    q = "model.layers.1.self_attn.q_proj"
    want = merge_tensors([torch.zeros_like(a[q]), a[q], b[q]], "ties", base_index=0,
                         parameters={"density": 1.0, "weight": [1.0, 1.0], "lambda": 1.0, "normalize": True})
    assert_close(got[q], want, rtol=1e-5, atol=1e-6)
    report = json.loads((out / "merge_report.json").read_text())["modules"]
    assert report[q]["n_adapters"] == 2 and report["model.layers.0.mlp.up_proj"]["n_adapters"] == 1
