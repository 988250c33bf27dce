"""Load the base and the merged adapter once per process, as the agents' config says."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tiesmerge.agents.config import AgentsConfig
from tiesmerge.devices import resolve_device
from tiesmerge.errors import BadInputError


@dataclass
class AgentModel:
    model: object
    tokenizer: object
    device: torch.device
    quantized: bool
    load_s: float


def resolve_adapter(cfg: AgentsConfig, root: Path) -> Path | None:
    if cfg.adapter is None:
        return None
    path = Path(cfg.adapter)
    path = path if path.is_absolute() else root / path
    if not (path / "adapter_config.json").is_file():
        raise BadInputError(f"adapter {path} has no adapter_config.json; point `adapter:` in agents.yaml at a "
                            "merged adapter folder (tiesmerge deploy writes one)")
    if not (path / "adapter_model.safetensors").is_file():
        raise BadInputError(f"adapter {path} has no adapter_model.safetensors (pickled .bin adapters are refused)")
    return path


def resolve_base(cfg: AgentsConfig, root: Path) -> str:
    """A relative local folder is taken relative to the config; anything else is passed on (hub id, `smollm2`)."""
    candidate = root / cfg.base
    return str(candidate) if not Path(cfg.base).is_absolute() and candidate.is_dir() else cfg.base


def load_agent_model(cfg: AgentsConfig, root: Path, log=lambda m: print(m, file=sys.stderr)) -> AgentModel:
    """The base (4-bit NF4 when configured, default on CUDA) with the merged adapter applied through PEFT;
    on an unquantized base the adapter is folded into the weights when `merge_adapter` (no LoRA matmuls)."""
    from tiesmerge.eval.models import load_base

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    four_bit = cfg.load_in_4bit if cfg.load_in_4bit is not None else device.type == "cuda"
    adapter = resolve_adapter(cfg, root)
    model, tokenizer = load_base(resolve_base(cfg, root), dtype=cfg.dtype, device=str(device), load_in_4bit=four_bit)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if cfg.merge_adapter and not four_bit:
            model = model.merge_and_unload()
        model.eval()
    elapsed = time.perf_counter() - start
    log(f"loaded {cfg.base}{' (4-bit NF4)' if four_bit else ''}"
        f"{' + ' + str(adapter) if adapter else ''} on {device} in {elapsed:.1f} s")
    return AgentModel(model, tokenizer, device, four_bit, elapsed)
