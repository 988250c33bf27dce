"""Load the base and the merged adapter once per process, as the agents' config says (transformers 4.46 or 5.x)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .compat import config_overrides, load_tokenizer, transformers_major
from .config import AgentsConfig
from .devices import resolve_device
from .errors import AgentInputError
from .quant import fit_cpu_kernels, nf4_kwargs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        raise AgentInputError(f"adapter {path} has no adapter_config.json; point `adapter:` in agents.yaml at a "
                              "merged adapter folder (tiesmerge deploy writes one)")
    if not (path / "adapter_model.safetensors").is_file():
        raise AgentInputError(f"adapter {path} has no adapter_model.safetensors (pickled .bin adapters are refused)")
    return path


def resolve_base(cfg: AgentsConfig, root: Path) -> str:
    """A relative local folder is taken relative to the config; anything else is passed on (a hub id)."""
    candidate = root / cfg.base
    return str(candidate) if not Path(cfg.base).is_absolute() and candidate.is_dir() else cfg.base


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """transformers 5 names the argument `dtype`; 4.x calls it `torch_dtype`."""
    return {"dtype": dtype} if transformers_major() >= 5 else {"torch_dtype": dtype}


def load_causal_lm(path: str, *, device: torch.device, dtype: torch.dtype, four_bit: bool, name: str, fix: str):
    """(model, tokenizer) from a local folder or cached hub id: NF4 via bitsandbytes when `four_bit` (with the CPU
    kernel fit), else `dtype` on `device`; eval mode, a pad token set. Shared by the agents and `tiesmerge eval`;
    one-line AgentInputError naming `name` and `fix` when it cannot be loaded."""
    from transformers import AutoModelForCausalLM

    kwargs = dtype_kwargs(dtype)
    if four_bit:
        kwargs.update(nf4_kwargs(device))
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, **config_overrides(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise AgentInputError(f"cannot load base model {name!r}: {str(exc).splitlines()[0]} ({fix})") from None
    if not four_bit:
        model.to(device)
    elif device.type == "cpu":
        fit_cpu_kernels(model)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_agent_model(cfg: AgentsConfig, root: Path, log=lambda m: print(m, file=sys.stderr)) -> AgentModel:
    """The base (4-bit NF4 when configured, default on CUDA) with the merged adapter applied through PEFT;
    on an unquantized base the adapter is folded into the weights when `merge_adapter` (no LoRA matmuls)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    four_bit = cfg.load_in_4bit if cfg.load_in_4bit is not None else device.type == "cuda"
    adapter = resolve_adapter(cfg, root)
    dtype = DTYPES.get(cfg.dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model, tokenizer = load_causal_lm(resolve_base(cfg, root), device=device, dtype=dtype, four_bit=four_bit,
                                      name=cfg.base, fix="set `base:` in agents.yaml to a local model folder or a "
                                      "cached hub id")
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
