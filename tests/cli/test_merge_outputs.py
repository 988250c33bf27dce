"""What a merge writes: dtype, the model card, embedding LoRA, restricted layers, and --method overrides."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml
from safetensors import safe_open
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.conftest import make_peft_adapter, peft_deltas, peft_logits


def test_bf16_output_and_model_card(tiny_base, adapter_set, tmp_path):
    out = tmp_path / "m"
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}:0.5", "--adapter", f"b={adapter_set['plain4']}:0.5",
                  "--density", "0.5", "--rank", "4", "--dtype", "bfloat16", "-o", out)
    assert res.exit_code == 0, res.output
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        assert len(list(f.keys())) == 28
    card = (out / "README.md").read_text()
    for name in ("rs8", "plain4"):
        digest = hashlib.sha256((adapter_set[name] / "adapter_model.safetensors").read_bytes()).hexdigest()
        assert digest in card
    assert "library_name: peft" in card and "density: 0.5" in card and "tiesmerge" in card
    recipe = yaml.safe_load(card.split("```yaml")[1].split("```")[0])
    assert recipe["method"] == "ties" and recipe["output"]["rank"] == 4
    report = json.loads((out / "merge_report.json").read_text())
    assert report["inputs"][0]["sha256"] in card and report["recipe"]["parameters"]["density"] == 0.5
    got = peft_deltas(tiny_base, out)  # PEFT loads the bf16 adapter
    assert len(got) == 14


def test_embedding_lora_identity(tiny_base, tmp_path):
    emb = make_peft_adapter(tiny_base, tmp_path / "emb", seed=5, r=4, alpha=8, rslora=True,
                            targets=("embed_tokens", "q_proj"))
    out = tmp_path / "m"
    res = run_cli("merge", "--adapter", f"e={emb}", "--method", "ties", "--density", "1", "--rank", "full", "-o", out)
    assert res.exit_code == 0, res.output
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    assert_close(peft_logits(tiny_base, out, ids), peft_logits(tiny_base, emb, ids), atol=1e-5, rtol=1e-5)
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        assert "base_model.model.model.embed_tokens.lora_embedding_A" in f.keys()


def test_layers_to_transform_gives_exact_targets(tiny_base, tmp_path):
    only1 = make_peft_adapter(tiny_base, tmp_path / "l1", seed=6, r=4, alpha=4, rslora=False, layers_to_transform=[1])
    out = tmp_path / "m"
    res = run_cli("merge", "--adapter", f"x={only1}", "--method", "task_arithmetic", "--rank", "full", "-o", out)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert isinstance(cfg["target_modules"], str)
    got, want = peft_deltas(tiny_base, out), peft_deltas(tiny_base, only1)
    assert set(got) == set(want) and all(".1." in k for k in got)
    for k in want:
        assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_method_flag_drops_parameters_the_new_method_does_not_read(adapter_set, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "method": "ties", "parameters": {"density": 0.3, "sign": "count", "lambda": 0.9},
        "adapters": [{"name": "a", "path": str(adapter_set["rs8"]), "density": 0.5}], "output": {"rank": "full"}}))
    res = run_cli("merge", recipe, "--method", "task_arithmetic", "-o", tmp_path / "m")
    assert res.exit_code == 0, res.stderr
    assert "note: method task_arithmetic does not read the recipe's density, sign, adapters.a.density" in res.stderr
    report = json.loads((tmp_path / "m" / "merge_report.json").read_text())
    assert report["recipe"]["parameters"]["lambda"] == 0.9 and "density" not in report["recipe"]["parameters"]


@pytest.mark.parametrize("method", ["dare_ties", "della", "breadcrumbs_ties", "magnitude_prune", "dare_linear"])
def test_mergekit_methods_run_end_to_end_and_are_reproducible(adapter_set, tmp_path, method):
    args = ["merge", "--adapter", f"a={adapter_set['rs8']}:0.5", "--adapter", f"b={adapter_set['rs16']}:0.5",
            "--method", method, "--density", "0.5", "--rank", "full", "--seed", "3"]
    assert run_cli(*args, "-o", tmp_path / "one").exit_code == 0
    assert run_cli(*args, "-o", tmp_path / "two").exit_code == 0
    a = (tmp_path / "one" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "two" / "adapter_model.safetensors").read_bytes()


def test_embedding_base_weights_must_agree(tiny_base, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    emb = make_peft_adapter(tiny_base, tmp_path / "emb", seed=5, r=4, alpha=8, targets=("embed_tokens",))
    other = tmp_path / "other"
    shutil.copytree(emb, other)
    tensors = load_file(other / "adapter_model.safetensors")
    tensors["base_model.model.model.embed_tokens.base_layer.weight"][0, 0] += 1.0
    save_file(tensors, str(other / "adapter_model.safetensors"))
    out = tmp_path / "m"
    res = run_cli("merge", "--adapter", f"a={emb}", "--adapter", f"b={other}", "-o", out)
    assert res.exit_code == 2 and "carry different base weights" in res.stderr and not out.exists()
