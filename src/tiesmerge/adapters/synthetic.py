"""Synthetic PEFT LoRA adapter sets at real model shapes, for examples, tests and benchmarks.

Not i.i.d. noise: each adapter's ΔW = Σ_j σ_j b_j a_jᵀ with a decaying spectrum σ_j = decay^j;
the first `shared` components' directions are common to every adapter of a set (drawn from
`set_seed`), each with an adapter-specific sign and strength, and the rest are the adapter's own.
So the adapters overlap the way specialists from one base do, and TIES sees real sign conflicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tiesmerge.adapters.writer import StreamingSafetensorsWriter

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """A decoder's projection shapes (Llama / Qwen2 layout)."""

    name: str
    hidden: int
    kv: int  # num_key_value_heads × head_dim
    intermediate: int
    layers: int

    def modules(self, layers: int | None = None) -> dict[str, tuple[int, int]]:
        """module name → (d_out, d_in) for the first `layers` layers."""
        h, kv, i = self.hidden, self.kv, self.intermediate
        shapes = {
            "self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i),
        }
        n = self.layers if layers is None else layers
        return {f"model.layers.{l}.{k}": v for l in range(n) for k, v in shapes.items()}


SHAPES = {
    s.name: s
    for s in (
        ModelShape("smollm2-135m", hidden=576, kv=192, intermediate=1536, layers=30),
        ModelShape("qwen2.5-7b", hidden=3584, kv=512, intermediate=18944, layers=28),
        ModelShape("qwen2.5-72b", hidden=8192, kv=1024, intermediate=29568, layers=80),
        ModelShape("tiny", hidden=64, kv=32, intermediate=128, layers=2),
    )
}
BASE_MODELS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
               "qwen2.5-72b": "Qwen/Qwen2.5-72B-Instruct"}


def _factors(gen: torch.Generator, d_out: int, d_in: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.randn(d_out, k, generator=gen) / math.sqrt(d_out)
    a = torch.randn(k, d_in, generator=gen) / math.sqrt(d_in)
    return b, a


def synthetic_factors(
    d_out: int, d_in: int, r: int, *, module_index: int, adapter_seed: int, set_seed: int,
    shared: int, decay: float, magnitude: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with ΔW = B·A (before the PEFT scale) following the module docstring."""
    shared = min(shared, r)
    g_set = torch.Generator().manual_seed(set_seed * 100_003 + module_index)
    g_own = torch.Generator().manual_seed(adapter_seed * 100_003 + module_index + 7)
    b_sh, a_sh = _factors(g_set, d_out, d_in, shared)
    b_own, a_own = _factors(g_own, d_out, d_in, r - shared)
    # each adapter uses the shared directions with its own sign and strength
    mix = (torch.rand(shared, generator=g_own) + 0.5) * torch.where(torch.rand(shared, generator=g_own) < 0.7, 1.0, -1.0)
    b = torch.cat([b_sh * mix, b_own], 1)
    a = torch.cat([a_sh, a_own], 0)
    sigma = magnitude * decay ** torch.arange(r, dtype=torch.float32)
    root = sigma.sqrt()
    return (root[:, None] * a).contiguous(), (b * root).contiguous()


def write_synthetic_adapter(
    path: Path, shape: ModelShape, *, layers: int | None = None, r: int = 16, alpha: float = 32,
    rslora: bool = True, adapter_seed: int = 0, set_seed: int = 1234, shared: int | None = None,
    decay: float = 0.9, magnitude: float = 1.0, dtype: torch.dtype = torch.float32, base_model: str | None = None,
) -> Path:
    """Write one PEFT-format adapter directory (adapter_config.json + adapter_model.safetensors)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    shared = r // 2 if shared is None else shared
    scale = alpha / math.sqrt(r) if rslora else alpha / r
    with StreamingSafetensorsWriter(path / "adapter_model.safetensors", metadata={"format": "pt"}) as writer:
        for idx, (name, (d_out, d_in)) in enumerate(shape.modules(layers).items()):
            a, b = synthetic_factors(
                d_out, d_in, r, module_index=idx, adapter_seed=adapter_seed, set_seed=set_seed,
                shared=shared, decay=decay, magnitude=magnitude / scale,
            )
            writer.add(f"base_model.model.{name}.lora_A.weight", a.to(dtype))
            writer.add(f"base_model.model.{name}.lora_B.weight", b.to(dtype))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or BASE_MODELS.get(shape.name, shape.name),
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "target_modules": list(PROJECTIONS),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
