"""mergekit YAML recipes (its documented format) give the same merge as the equivalent native recipe; fields with no
meaning here are refused in one line."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.cli.test_core_install import read_adapter, write_adapter

pytestmark = pytest.mark.core


@pytest.fixture()
def pair(tmp_path):
    a = write_adapter(tmp_path / "a", seed=1, r=4, alpha=8, rslora=True)
    b = write_adapter(tmp_path / "b", seed=2, r=6, alpha=6, rslora=False)
    return tmp_path, a, b


def test_a_mergekit_ties_recipe_equals_the_native_one(pair):
    root, _, _ = pair
    (root / "mk.yml").write_text(yaml.safe_dump({
        "models": [{"model": "a", "parameters": {"density": 0.5, "weight": 0.7}},
                   {"model": "b", "parameters": {"density": 0.3, "weight": 0.3}}],
        "merge_method": "ties", "base_model": "tiny-base",
        "parameters": {"normalize": True, "int8_mask": True, "lambda": 0.9}, "dtype": "float32"}))
    (root / "native.yaml").write_text(yaml.safe_dump({
        "method": "ties", "base_model": "tiny-base", "parameters": {"normalize": True, "lambda": 0.9},
        "adapters": [{"path": "a", "density": 0.5, "weight": 0.7}, {"path": "b", "density": 0.3, "weight": 0.3}],
        "output": {"dtype": "float32", "rank": "full"}}))
    res = run_cli("merge", root / "mk.yml", "--rank", "full", "-o", root / "m1")
    assert res.exit_code == 0, res.stderr
    assert "ignoring parameters.int8_mask" in res.stderr
    assert run_cli("merge", root / "native.yaml", "-o", root / "m2").exit_code == 0
    t1, t2 = load_file(root / "m1" / "adapter_model.safetensors"), load_file(root / "m2" / "adapter_model.safetensors")
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)


def test_mergekit_linear_is_the_normalized_weighted_average(pair):
    root, a, b = pair
    (root / "lin.yml").write_text(yaml.safe_dump({
        "merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 3.0}},
                                             {"model": "b", "parameters": {"weight": 1.0}}]}))
    assert run_cli("merge", root / "lin.yml", "--rank", "full", "-o", root / "m").exit_code == 0
    got = read_adapter(root / "m")
    for name in a:
        assert_close(got[name], 0.75 * a[name] + 0.25 * b[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("doc,needle", [
    ({"merge_method": "ties", "models": [{"model": "a", "parameters": {"density": [1, 0.7, 0.1]}}]},
     "per-layer gradients"),
    ({"merge_method": "ties", "slices": [], "models": [{"model": "a"}]}, "`slices` is not supported"),
    ({"merge_method": "slerp", "models": [{"model": "a"}]}, "merge_method 'slerp' has no LoRA equivalent"),
    ({"merge_method": "ties", "models": [{"model": "base+a"}]}, "mergekit's base+lora"),
    ({"merge_method": "ties", "models": [{"model": "a", "parameters": {"filter_wise": True}}]},
     "no per-adapter tiesmerge equivalent"),
])
def test_fields_with_no_meaning_here_are_refused_in_one_line(pair, doc, needle):
    root, _, _ = pair
    (root / "bad.yml").write_text(yaml.safe_dump(doc))
    res = run_cli("validate", root / "bad.yml")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
