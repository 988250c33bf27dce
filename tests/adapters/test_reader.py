"""The reader's per-module scale and ΔW equal what PEFT's own loader computes."""

from __future__ import annotations

import pytest
from torch.testing import assert_close

from tests.conftest import peft_deltas
from tiesmerge.adapters.reader import AdapterReader


@pytest.mark.parametrize("name", ["rs8", "plain4", "rs16", "pattern"])
def test_reader_delta_equals_peft_loaded_delta(tiny_base, adapter_set, name):
    reader = AdapterReader(adapter_set[name], name)
    want = peft_deltas(tiny_base, adapter_set[name])
    assert set(reader.modules) == set(want)
    for module, delta in want.items():
        assert_close(reader.delta(module), delta, rtol=1e-5, atol=1e-6)


def test_patterns_resolve_like_peft(adapter_set):
    reader = AdapterReader(adapter_set["pattern"], "pattern")
    m = reader.modules
    assert m["model.layers.0.self_attn.q_proj"].rank == 2
    assert m["model.layers.1.mlp.down_proj"].rank == 3
    assert m["model.layers.0.mlp.down_proj"].rank == 6
    assert m["model.layers.0.self_attn.v_proj"].scale == pytest.approx(5 / 6)
    assert m["model.layers.0.mlp.up_proj"].scale == pytest.approx(20 / 6)
    assert m["model.layers.1.mlp.up_proj"].scale == pytest.approx(2.0)


def test_rslora_scale(adapter_set):
    reader = AdapterReader(adapter_set["rs16"], "rs16")
    assert [e.scale for e in reader.modules.values()] == [pytest.approx(8 / 4)] * 14


def test_modules_are_in_natural_order(adapter_set):
    names = list(AdapterReader(adapter_set["rs8"], "rs8").modules)
    layers = [int(n.split(".")[2]) for n in names]
    assert layers == sorted(layers) and len(names) == 14
