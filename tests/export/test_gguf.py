"""`tiesmerge export --to gguf`: read back with the gguf package and apply llama.cpp's documented rule (every tensor
pair scaled by adapter.lora.alpha / its rank); the result is the adapter's ΔW — for a Qwen2 base as is, for a llama
base in llama.cpp's permuted q / k row order."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

from tests.cli.helpers import run_cli, with_config
from tests.conftest import make_peft_adapter, peft_deltas

gguf = pytest.importorskip("gguf")


def read_gguf(path):
    reader = gguf.GGUFReader(str(path))
    fields = {f.name: f for f in reader.fields.values()}

    def value(name):
        f = fields[name]
        return f.parts[f.data[0]].tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else \
            float(f.parts[f.data[0]][0])

    tensors = {t.name: torch.tensor(t.data.copy()).reshape(tuple(reversed(t.shape.tolist()))) for t in reader.tensors}
    return value, tensors


def llama_cpp_deltas(path) -> dict[str, torch.Tensor]:
    value, tensors = read_gguf(path)
    assert value("general.type") == "adapter" and value("adapter.type") == "lora"
    alpha = value("adapter.lora.alpha")
    out = {}
    for name, a in tensors.items():
        if name.endswith(".lora_a"):
            b = tensors[name.replace(".lora_a", ".lora_b")]
            assert a.shape[0] == b.shape[1]
            out[name.removesuffix(".weight.lora_a")] = alpha / a.shape[0] * (b.double() @ a.double())
    return out


GGUF_NAME = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}


def gguf_name(module: str) -> str:
    _, _, layer, *rest = module.split(".")
    return f"blk.{layer}.{GGUF_NAME['.'.join(rest)]}"


@pytest.mark.parametrize("name", ["rs8", "pattern", "plain4"])
def test_qwen2_gguf_gives_llama_cpp_the_adapters_delta(adapter_set, tiny_base, tmp_path, name):
    out = tmp_path / "a.gguf"
    res = run_cli("export", adapter_set[name], "--to", "gguf", "--base", tiny_base, "-o", out)
    assert res.exit_code == 0, res.stderr
    want = peft_deltas(tiny_base, adapter_set[name])
    got = llama_cpp_deltas(out)
    assert set(got) == {gguf_name(m) for m in want}
    for module, delta in want.items():
        assert_close(got[gguf_name(module)], delta.double(), atol=1e-5, rtol=1e-5)


def test_llama_q_and_k_follow_llama_cpps_row_permutation(tmp_path):
    """A llama base: llama.cpp converts q / k weights with a rotary row permutation, so the adapter's B must be
    permuted the same way: ΔW′ = P ΔW, with P written here from convert_hf_to_gguf's reshape rule."""
    heads, kv, hidden, r = 4, 2, 32, 4
    base = tmp_path / "llama"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "num_attention_heads": heads,
                                                  "num_key_value_heads": kv, "num_hidden_layers": 1}))
    gen = torch.Generator().manual_seed(0)
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden // heads * kv, hidden),
              "self_attn.v_proj": (hidden // heads * kv, hidden)}
    tensors, deltas = {}, {}
    for leaf, (d_out, d_in) in shapes.items():
        a, b = torch.randn(r, d_in, generator=gen), torch.randn(d_out, r, generator=gen)
        tensors[f"base_model.model.model.layers.0.{leaf}.lora_A.weight"] = a
        tensors[f"base_model.model.model.layers.0.{leaf}.lora_B.weight"] = b
        deltas[leaf] = 8 / math.sqrt(r) * (b.double() @ a.double())
    adapter = tmp_path / "ad"
    adapter.mkdir()
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 8,
                                                             "use_rslora": True, "target_modules": ["q_proj",
                                                             "k_proj", "v_proj"]}))
    res = run_cli("export", adapter, "--to", "gguf", "--base", base, "-o", tmp_path / "x.gguf")
    assert res.exit_code == 0, res.stderr
    got = llama_cpp_deltas(tmp_path / "x.gguf")

    def rows(w, n_head):  # convert_hf_to_gguf: reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2)
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    assert_close(got["blk.0.attn_q"], rows(deltas["self_attn.q_proj"], heads), atol=1e-5, rtol=1e-5)
    assert_close(got["blk.0.attn_k"], rows(deltas["self_attn.k_proj"], kv), atol=1e-5, rtol=1e-5)
    assert_close(got["blk.0.attn_v"], deltas["self_attn.v_proj"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got["blk.0.attn_q"], deltas["self_attn.q_proj"])


def test_gguf_without_base_uses_the_adapters_local_base_folder_and_asks_only_otherwise(adapter_set, tiny_base,
                                                                                         tmp_path):
    res = run_cli("export", adapter_set["rs8"], "--to", "gguf", "-o", tmp_path / "auto.gguf")
    assert res.exit_code == 0, res.stderr
    assert f"using the adapter's base_model_name_or_path {tiny_base}" in res.stderr
    with_base = run_cli("export", adapter_set["rs8"], "--to", "gguf", "--base", tiny_base, "-o", tmp_path / "b.gguf")
    assert with_base.exit_code == 0 and (tmp_path / "auto.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    hub = with_config(adapter_set["rs8"], tmp_path / "hub", base_model_name_or_path="org/not-here")
    res = run_cli("export", hub, "--to", "gguf", "-o", tmp_path / "x.gguf")
    assert res.exit_code == 2 and "--to gguf needs --base" in res.stderr and "'org/not-here'" in res.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_gguf_refusals_are_one_line(adapter_set, tiny_base, tmp_path):
    emb = make_peft_adapter(tiny_base, tmp_path / "emb", seed=5, r=4, alpha=8, targets=("embed_tokens", "q_proj"))
    res = run_cli("export", emb, "--to", "gguf", "--base", tiny_base, "-o", tmp_path / "x.gguf")
    assert res.exit_code == 2 and "linear layers only" in res.stderr and not (tmp_path / "x.gguf").exists()
    (tmp_path / "x.gguf").write_text("old")
    res = run_cli("export", adapter_set["rs8"], "--to", "gguf", "--base", tiny_base, "-o", tmp_path / "x.gguf")
    assert res.exit_code == 2 and "pass --force" in res.stderr and (tmp_path / "x.gguf").read_text() == "old"
