"""Identity merges reproduce the input adapter's logits through PEFT's loader (SPEC: test ΔW, not A and B)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.conftest import load_base, peft_logits


@pytest.fixture(scope="module")
def input_ids():
    return torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("adapter", ["rs8", "plain4", "pattern"])
@pytest.mark.parametrize("flags", [
    ["--method", "task_arithmetic", "--rank", "full"],
    ["--method", "ties", "--density", "1", "--rank", "full"],
])
def test_identity_merge_reproduces_logits(tiny_base, adapter_set, tmp_path, input_ids, adapter, flags):
    out = tmp_path / "merged"
    res = run_cli("merge", "--adapter", f"{adapter}={adapter_set[adapter]}:1.0", *flags, "-o", out)
    assert res.exit_code == 0, res.output
    want = peft_logits(tiny_base, adapter_set[adapter], input_ids)
    got = peft_logits(tiny_base, out, input_ids)
    with torch.no_grad():
        base = load_base(tiny_base)(input_ids=input_ids).logits
    assert float((want - base).abs().max()) > 1e-2  # the adapter really changes the logits
    assert_close(got, want, atol=1e-5, rtol=1e-5)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is False and cfg["r"] == cfg["lora_alpha"]
    assert cfg["base_model_name_or_path"] == str(tiny_base)
