"""The streaming safetensors writer round-trips through the safetensors library; the config is PEFT-loadable."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tiesmerge.adapters.writer import StreamingSafetensorsWriter, lora_config
from tiesmerge.atomic import atomic_output_dir
from tiesmerge.errors import BadInputError

pytestmark = pytest.mark.core


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_streaming_writer_roundtrip(tmp_path, dtype):
    gen = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(i + 1, 2 * i + 3, generator=gen).to(dtype) for i in range(5)}
    w = StreamingSafetensorsWriter(tmp_path / "x.safetensors", metadata={"format": "pt"})
    for k, v in tensors.items():
        w.add(k, v)
    w.close()
    got = load_file(tmp_path / "x.safetensors")
    assert set(got) == set(tensors)
    for k in tensors:
        assert got[k].dtype == dtype and torch.equal(got[k], tensors[k])
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert not (tmp_path / "x.safetensors.data").exists()


def test_config_scaling_is_one_and_peft_accepts_it(tmp_path):
    LoraConfig = pytest.importorskip("peft").LoraConfig

    ranks = {"model.layers.0.self_attn.q_proj": 8, "model.layers.0.mlp.up_proj": 8, "model.layers.1.mlp.up_proj": 3}
    cfg = lora_config(modules=list(ranks), ranks=ranks, base_model="b", task_type="CAUSAL_LM",
                      fan_in_fan_out=False, exact_targets=False)
    assert cfg["r"] == cfg["lora_alpha"] == 8 and cfg["use_rslora"] is False
    assert cfg["rank_pattern"] == cfg["alpha_pattern"] == {"model.layers.1.mlp.up_proj": 3}
    assert cfg["target_modules"] == ["q_proj", "up_proj"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    loaded = LoraConfig.from_pretrained(tmp_path)
    assert loaded.r == 8 and loaded.use_rslora is False


def test_atomic_dir_refuses_non_empty_and_cleans_up(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(BadInputError, match="--force"):
        with atomic_output_dir(target, force=False):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target, force=True) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "keep").exists()
    with atomic_output_dir(target, force=True) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
