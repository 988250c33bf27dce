"""A zero-memory module tree with a decoder's projection names and shapes, for running PEFT's
`add_weighted_adapter` on LoRA adapters without a base model (the base weights are never read)."""

from __future__ import annotations

import torch
import torch.nn as nn


def _linear(d_out: int, d_in: int) -> nn.Linear:
    layer = nn.Linear(1, 1, bias=False)
    layer.weight = nn.Parameter(torch.zeros(1, 1, dtype=torch.bfloat16).expand(d_out, d_in), requires_grad=False)
    layer.in_features, layer.out_features = d_in, d_out
    return layer


def skeleton(modules: dict[str, tuple[int, int]]) -> nn.Module:
    """modules: name → (d_out, d_in), e.g. model.layers.0.self_attn.q_proj."""
    root = nn.Module()
    for name, (d_out, d_in) in modules.items():
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(parts[-1], _linear(d_out, d_in))
    return root


def peft_ties_svd(adapters: dict[str, str], weights: list[float], modules: dict[str, tuple[int, int]],
                  density: float, rank: int) -> dict[str, torch.Tensor]:
    """PEFT 0.21's add_weighted_adapter(..., 'ties_svd') on the skeleton; returns the merged state dict."""
    from peft import LoraConfig, PeftModel, get_peft_model_state_dict

    model = skeleton(modules)
    peft = None
    for name, path in adapters.items():
        cfg = LoraConfig.from_pretrained(path)
        cfg.task_type = None
        if peft is None:
            peft = PeftModel.from_pretrained(model, path, adapter_name=name, config=cfg)
        else:
            peft.load_adapter(path, adapter_name=name, peft_config=cfg)
    peft.add_weighted_adapter(list(adapters), weights, adapter_name="merged", combination_type="ties_svd",
                              density=density, svd_rank=rank)
    return get_peft_model_state_dict(peft, adapter_name="merged"), peft.peft_config["merged"]
