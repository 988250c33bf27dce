"""4-bit NF4 bases through bitsandbytes, imported only when 4-bit is asked for.

On CPUs with AVX-512 BF16, bitsandbytes ≥ 0.48 repacks each NF4 weight for its fused CPU kernel on the first
forward pass. The repacking needs a linear's input size to be a multiple of the quantization block (64) and its
output size a multiple of 32; any other shape fails deep inside bitsandbytes (`shape '[32, 0]' is invalid`).
`fit_cpu_kernels` keeps the generic (dequantize-then-matmul) kernel for exactly those linears, so every model
loads and scores; where a bitsandbytes version repacks but offers no per-layer switch, it stops with one line.
"""

from __future__ import annotations

import logging

import torch

from .errors import AgentInputError

REPACK_BLOCK_N = 32  # bitsandbytes' `_convert_weight_packed_for_cpu(block_n=32)`
INSTALL_HINT = "pip install bitsandbytes (or, with tiesmerge: pip install 'tiesmerge[agents]')"


def import_bitsandbytes():
    """bitsandbytes, with its import-time notices (e.g. the optional `kernels` package it cannot find) kept off
    the user's terminal: they are not actionable here and the generic kernels are used."""
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        raise AgentInputError(f"--load-in-4bit needs bitsandbytes: {INSTALL_HINT}") from None
    finally:
        logger.setLevel(level)
    return bitsandbytes


def nf4_kwargs(device: torch.device) -> dict:
    """`from_pretrained` keyword arguments for an NF4 base on `device` (bf16 compute on CUDA, fp32 on CPU)."""
    import_bitsandbytes()
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    return {  # the same keys on transformers 4.46 and 5.x
        "quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                  bnb_4bit_compute_dtype=compute),
        "device_map": {"": device.index or 0} if device.type == "cuda" else {"": "cpu"},
    }


def repacks_on_this_cpu(bnb) -> bool:
    """Whether this bitsandbytes repacks NF4 weights for an AVX-512-BF16 CPU kernel on this machine."""
    functional = bnb.functional
    if not hasattr(functional, "_convert_weight_packed_for_cpu"):
        return False  # older releases (e.g. 0.45) have no repacked CPU path
    check = getattr(functional, "has_avx512bf16", None)
    try:
        return bool(check()) if check is not None else True
    except Exception:  # the probe itself failed: assume the fused path may run
        return True


def repack_misfit(module) -> str | None:
    """Why the CPU repacking cannot take this Linear4bit, or None if it can."""
    state = getattr(module.weight, "quant_state", None)
    block = getattr(state, "blocksize", 64) or 64
    shape = tuple(getattr(state, "shape", None) or (module.out_features, module.in_features))
    out_f, in_f = int(shape[0]), int(shape[-1])
    if in_f % block:
        return f"input size {in_f} is not a multiple of {block}"
    if out_f % REPACK_BLOCK_N:
        return f"output size {out_f} is not a multiple of {REPACK_BLOCK_N}"
    return None


def fit_cpu_kernels(model) -> list[str]:
    """Keep bitsandbytes' generic CPU kernel for every 4-bit linear its repacked kernel cannot take.

    Returns the names of the linears switched. Raises one-line AgentInputError when such a linear exists and
    this bitsandbytes version has no per-layer switch.
    """
    bnb = import_bitsandbytes()
    if not repacks_on_this_cpu(bnb):
        return []
    switched = []
    for name, module in model.named_modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        why = repack_misfit(module)
        if why is None:
            continue
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            raise AgentInputError(
                f"4-bit on this CPU: bitsandbytes {bnb.__version__} repacks NF4 weights for its AVX-512-BF16 kernel "
                f"and {name}'s {why}; load the base without --load-in-4bit on CPU, or run on a GPU")
        module.support_avx512bf16_for_cpu = False
        switched.append(name)
    return switched
