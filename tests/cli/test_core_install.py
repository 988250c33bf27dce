"""The core install: merge, validate, inspect and methods with only torch, numpy, safetensors, typer, pydantic,
pyyaml and rich. Adapters are written by hand (safetensors + adapter_config.json, PEFT's layout) and the merge is
checked against TIES written here from the paper (Yadav et al. 2023: trim by a full sort, elect the sign of the
summed mass, average the agreeing entries). `make test-min` runs this module in a venv with the oldest declared
versions and without transformers, peft or mergekit (TIESMERGE_CORE_ONLY=1 asserts that)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from tests.cli.helpers import run_cli

pytestmark = pytest.mark.core

SHAPES = {  # module → (d_out, d_in)
    "model.layers.0.self_attn.q_proj": (24, 16),
    "model.layers.0.mlp.down_proj": (16, 40),
    "model.layers.1.self_attn.q_proj": (24, 16),
}


def write_adapter(path: Path, *, seed: int, r: int, alpha: float, rslora: bool) -> dict[str, torch.Tensor]:
    """A PEFT LoRA adapter written without PEFT; returns each module's ΔW = scale · B · A (float64)."""
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    scale = alpha / (math.sqrt(r) if rslora else r)
    for name, (d_out, d_in) in SHAPES.items():
        a = torch.randn(r, d_in, generator=gen) / math.sqrt(d_in)
        b = torch.randn(d_out, r, generator=gen) / math.sqrt(r)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
        deltas[name] = scale * (b.double() @ a.double())
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny-base", "r": r,
        "lora_alpha": alpha, "use_rslora": rslora, "target_modules": ["q_proj", "down_proj"],
        "fan_in_fan_out": False, "bias": "none", "lora_dropout": 0.0,
    }))
    return deltas


def read_adapter(path: Path) -> dict[str, torch.Tensor]:
    """ΔW of every module of a written adapter, by PEFT's rule (scale = α/r, or α/√r with RSLoRA; patterns win)."""
    cfg = json.loads((path / "adapter_config.json").read_text())
    tensors = load_file(str(path / "adapter_model.safetensors"))
    out = {}
    for key, a in tensors.items():
        if not key.endswith("lora_A.weight"):
            continue
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        b = tensors[key.replace("lora_A", "lora_B")]
        r = next((v for k, v in cfg.get("rank_pattern", {}).items() if name.endswith(k)), cfg["r"])
        alpha = next((v for k, v in cfg.get("alpha_pattern", {}).items() if name.endswith(k)), cfg["lora_alpha"])
        assert a.shape[0] == r
        out[name] = alpha / (math.sqrt(r) if cfg.get("use_rslora") else r) * (b.double() @ a.double())
    return out


def ties_reference(deltas: list[torch.Tensor], weights: list[float], density: float, lam: float) -> torch.Tensor:
    """TIES from the paper, with a full sort for the trim (independent of the product's selection kernel)."""
    taus = []
    for delta, w in zip(deltas, weights):
        flat = delta.reshape(-1)
        k = max(1, int(density * flat.numel()))
        keep = torch.zeros_like(flat)
        keep[torch.sort(flat.abs(), descending=True).indices[:k]] = 1
        taus.append(w * (flat * keep).reshape(delta.shape))
    stack = torch.stack(taus)
    sign = torch.where(stack.sum(0) >= 0, 1.0, -1.0).double()
    agree = (stack.sign() == sign).double()
    wts = torch.tensor(weights, dtype=torch.float64).reshape(-1, 1, 1)
    divisor = (wts * agree).sum(0)
    divisor[divisor == 0] = 1
    return lam * (stack * agree).sum(0) / divisor


@pytest.fixture(scope="module")
def hand_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand")
    return root, {
        "a": write_adapter(root / "a", seed=1, r=4, alpha=8, rslora=True),
        "b": write_adapter(root / "b", seed=2, r=6, alpha=6, rslora=False),
        "c": write_adapter(root / "c", seed=3, r=2, alpha=16, rslora=True),
    }


def test_core_install_has_no_extras():
    """In `make test-min`'s venv the heavy extras are absent; merge still runs (the tests below)."""
    if os.environ.get("TIESMERGE_CORE_ONLY") != "1":
        pytest.skip("only meaningful in the core-only venv (make test-min)")
    from tiesmerge.extras import installed

    for module in ("transformers", "peft", "mergekit", "bitsandbytes", "scipy", "matplotlib", "gguf"):
        assert not installed(module), f"{module} is importable in the core-only venv"
    import tiesmerge.cli.app  # noqa: F401  the whole CLI imports without them

    assert "transformers" not in sys.modules and "peft" not in sys.modules


def test_a_hub_id_without_huggingface_hub_says_what_to_install(hand_set, tmp_path, monkeypatch):
    if os.environ.get("TIESMERGE_CORE_ONLY") != "1":
        pytest.skip("only meaningful in the core-only venv (make test-min)")
    root, _ = hand_set
    monkeypatch.chdir(tmp_path)
    res = run_cli("merge", "--adapter", "x=org/adapter", "--adapter", f"a={root / 'a'}", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "reading Hub ids needs huggingface_hub" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_an_export_that_needs_an_extra_says_which(hand_set, tmp_path):
    if os.environ.get("TIESMERGE_CORE_ONLY") != "1":
        pytest.skip("only meaningful in the core-only venv (make test-min)")
    root, _ = hand_set
    res = run_cli("export", root / "a", "--to", "gguf", "--base", root / "b", "-o", tmp_path / "x.gguf")
    assert res.exit_code == 2 and "--to gguf needs the gguf package" in res.stderr, res.stderr
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("density,lam", [(0.3, 1.0), (1.0, 0.7)])
def test_ties_merge_equals_the_paper(hand_set, tmp_path, density, lam):
    root, deltas = hand_set
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    out = tmp_path / "merged"
    res = run_cli("merge", *[x for n, w in weights.items() for x in ("--adapter", f"{n}={root / n}:{w}")],
                  "--density", density, "--lambda", lam, "--rank", "full", "--device", "cpu", "-o", out)
    assert res.exit_code == 0, res.output
    merged = read_adapter(out)
    assert set(merged) == set(SHAPES)
    for name in SHAPES:
        want = ties_reference([deltas[n][name] for n in weights], list(weights.values()), density, lam)
        assert_close(merged[name], want, atol=1e-5, rtol=1e-4)


def test_task_arithmetic_is_the_weighted_sum(hand_set, tmp_path):
    root, deltas = hand_set
    out = tmp_path / "ta"
    res = run_cli("merge", "--adapter", f"a={root / 'a'}:0.6", "--adapter", f"b={root / 'b'}:0.4",
                  "--method", "task_arithmetic", "--lambda", 1.5, "--rank", "full", "-o", out)
    assert res.exit_code == 0, res.output
    merged = read_adapter(out)
    for name in SHAPES:
        assert_close(merged[name], 1.5 * (0.6 * deltas["a"][name] + 0.4 * deltas["b"][name]), atol=1e-5, rtol=1e-4)


def test_validate_and_inspect_read_the_set(hand_set, tmp_path):
    root, _ = hand_set
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"adapters": [{"name": n, "path": str(root / n)} for n in "abc"],
                                      "method": "ties", "parameters": {"density": 0.2},
                                      "output": {"rank": 8}}))
    res = run_cli("validate", recipe)
    assert res.exit_code == 0, res.output
    assert "method: ties" in res.output and "r 6" in res.output and "scale 1" in res.output  # b: α/r = 6/6
    res = run_cli("inspect", "--json", root / "a", root / "b", root / "c")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert [a["rank"] for a in info["adapters"]] == ["4", "6", "2"]
    assert float(info["adapters"][0]["scale"]) == pytest.approx(8 / 2)  # RSLoRA: α/√r
    assert info["problems"] == [] and "3 adapter(s)" in info["verdict"]


def test_methods_lists_every_registered_method():
    from tiesmerge.merge.registry import REGISTRY

    res = run_cli("methods", env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    for method in REGISTRY:
        assert method.value in res.output


@pytest.mark.parametrize("argv,extra", [
    (("merge", "--method", "dare_ties", "--density", "0.5"), "mergekit"),
    (("eval", "--base", "tiny-base", "--builtin"), "eval"),
    (("sweep", "demo", "-o", "OUT"), "sweep"),
    (("deploy", "ADAPTER", "--base", "tiny-base", "--to", "OUT"), "agents"),
])
def test_a_missing_extra_is_one_line_naming_the_install(hand_set, tmp_path, monkeypatch, argv, extra):
    """Whatever is installed, a feature whose extra is absent stops before any work with exit 2 and the pip line."""
    from tiesmerge.extras import MODULES, Extra

    root, _ = hand_set
    for module in MODULES[Extra(extra)][:1]:
        monkeypatch.setitem(sys.modules, module, None)  # import of it now fails, as when not installed
    args = [str(a).replace("OUT", str(tmp_path / "out")).replace("ADAPTER", str(root / "a")) for a in argv]
    if argv[0] == "merge":
        args += ["--adapter", f"a={root / 'a'}", "--adapter", f"b={root / 'b'}", "-o", str(tmp_path / "out")]
    res = run_cli(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'tiesmerge[{extra}]'" in lines[0], res.stderr
    assert not (tmp_path / "out").exists()
