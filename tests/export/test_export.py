"""`tiesmerge export`: what vLLM computes from the export equals the adapter's ΔW as PEFT loads it; the folded full
model's logits equal base + adapter through PEFT; refusals are one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from tests.cli.helpers import run_cli, with_config
from tests.conftest import load_base, make_peft_adapter, peft_deltas, peft_logits
from tiesmerge.export.vllm import VLLM_RANKS


def vllm_deltas(folder) -> dict[str, torch.Tensor]:
    """ΔW as vLLM's peft_helper reads an adapter: one global scale α/r (α/√r with use_rslora), patterns ignored."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
    t = load_file(folder / "adapter_model.safetensors")
    out = {}
    for key, a in t.items():
        if key.endswith("lora_A.weight"):
            b = t[key.replace("lora_A", "lora_B")]
            assert a.shape[0] == b.shape[1] == cfg["r"]  # vLLM pads every module to one rank
            out[key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")] = scale * (b.double() @ a.double())
    return out


@pytest.mark.parametrize("name,rank", [("rs8", 8), ("pattern", 8), ("rs16", 16)])
def test_vllm_export_gives_vllm_the_adapters_delta(adapter_set, tiny_base, tmp_path, name, rank):
    out = tmp_path / "v"
    res = run_cli("export", adapter_set[name], "--to", "vllm", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert f"--max-lora-rank {rank}" in res.output
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == rank and cfg["use_rslora"] is False and rank in VLLM_RANKS
    assert cfg["rank_pattern"] == {} and cfg["alpha_pattern"] == {}
    want = peft_deltas(tiny_base, adapter_set[name])
    got = vllm_deltas(out)
    assert got.keys() == want.keys()
    for k in want:
        assert_close(got[k], want[k].double(), atol=1e-5, rtol=1e-5)
    # reading the ORIGINAL adapter vLLM's way is wrong wherever patterns or RSLoRA matter: the export is needed
    if name == "pattern":
        naive = vllm_deltas_unpadded(adapter_set[name])
        assert any(not torch.allclose(naive[k], want[k].double(), atol=1e-4) for k in want)


def vllm_deltas_unpadded(folder):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
    t = load_file(folder / "adapter_model.safetensors")
    return {k.removeprefix("base_model.model.").removesuffix(".lora_A.weight"):
            scale * (t[k.replace("lora_A", "lora_B")].double() @ a.double()) for k, a in t.items() if "lora_A" in k}


def test_a_rank_outside_vllms_set_is_rounded_up(tiny_base, tmp_path):
    src = make_peft_adapter(tiny_base, tmp_path / "r12", seed=9, r=12, alpha=24, rslora=True)
    res = run_cli("export", src, "--to", "vllm", "-o", tmp_path / "v")
    assert res.exit_code == 0 and "--max-lora-rank 16" in res.output
    want = peft_deltas(tiny_base, src)
    got = vllm_deltas(tmp_path / "v")
    assert all(torch.allclose(got[k], want[k].double(), atol=1e-5) for k in want)


def test_vllm_refuses_embedding_lora_in_one_line(tiny_base, tmp_path):
    src = make_peft_adapter(tiny_base, tmp_path / "emb", seed=5, r=4, alpha=8, targets=("embed_tokens", "q_proj"))
    res = run_cli("export", src, "--to", "vllm", "-o", tmp_path / "v")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "--to model" in res.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("targets", [None, ("embed_tokens", "q_proj", "down_proj")])
def test_model_export_logits_equal_base_plus_adapter(tiny_base, tmp_path, targets):
    from transformers import AutoModelForCausalLM

    kw = {"targets": targets} if targets else {}
    src = make_peft_adapter(tiny_base, tmp_path / "a", seed=3, r=4, alpha=8, rslora=True, **kw)
    out = tmp_path / "full"
    res = run_cli("export", src, "--to", "model", "--base", tiny_base, "-o", out)
    assert res.exit_code == 0, res.stderr
    assert (out / "config.json").read_text() == (tiny_base / "config.json").read_text()
    assert (out / "tokenizer.json").is_file()
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64).eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits
    assert_close(got, peft_logits(tiny_base, src, ids), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        base = load_base(tiny_base, torch.float64)(input_ids=ids).logits
    assert not torch.allclose(got, base, atol=1e-3)  # the adapter did change the model


def test_model_export_onto_the_wrong_base_is_refused(adapter_set, tiny_base_64, tmp_path):
    res = run_cli("export", adapter_set["rs8"], "--to", "model", "--base", tiny_base_64, "-o", tmp_path / "m")
    assert res.exit_code == 2 and "does not match the adapter's ΔW" in res.stderr
    assert not (tmp_path / "m").exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_unknown_format_and_missing_base_are_one_line(adapter_set, tmp_path):
    res = run_cli("export", adapter_set["rs8"], "--to", "onnx", "-o", tmp_path / "x")
    assert res.exit_code == 2 and "--to 'onnx' is unknown; use vllm or gguf or model" in res.stderr
    res = run_cli("export", adapter_set["rs8"], "--to", "model", "-o", tmp_path / "x")
    assert res.exit_code == 2 and "--to model needs --base" in res.stderr


def test_merge_with_export_writes_both(adapter_set, tiny_base, tmp_path):
    out = tmp_path / "merged"
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}", "--adapter", f"b={adapter_set['plain4']}",
                  "--rank", "auto", "--max-rank", "12", "-o", out, "--export", "vllm")
    assert res.exit_code == 0, res.stderr
    assert "merged-vllm: " in res.output and (tmp_path / "merged-vllm" / "adapter_config.json").is_file()
    want = peft_deltas(tiny_base, out)
    got = vllm_deltas(tmp_path / "merged-vllm")
    assert all(torch.allclose(got[k], want[k].double(), atol=1e-5) for k in want)
    hub = with_config(adapter_set["rs8"], tmp_path / "hub", base_model_name_or_path="org/not-here")
    res = run_cli("merge", "--adapter", f"a={hub}", "-o", tmp_path / "m2", "--export", "model")
    assert res.exit_code == 2 and "--export model needs --export-base" in res.stderr and not (tmp_path / "m2").exists()
