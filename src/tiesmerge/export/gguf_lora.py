"""A llama.cpp LoRA adapter (GGUF) with exactly the intended ΔW.

llama.cpp (`convert_lora_to_gguf.py`, `src/llama-adapter.cpp`) reads only `adapter.lora.alpha` and scales every
tensor pair by α / (that pair's rank), ignoring r, use_rslora and the patterns. So every module is written at one
rank R (zero padding is exact) with its own scale folded into B, and α = R: llama.cpp's scale is 1 everywhere.
Tensor names are llama.cpp's (`blk.N.attn_q.weight.lora_a` / `.lora_b`, via the gguf package's name map) for the
llama and qwen2 architectures; for llama, lora_b of q_proj and k_proj gets the same row permutation llama.cpp's
converter applies to those base weights (rotary layout), so B′A′ lines up with the converted base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.atomic import check_name_length, disk_error, refuse_overlap, replace_file, user_path
from tiesmerge.errors import BadInputError
from tiesmerge.extras import installed
from tiesmerge.portable import limits
from tiesmerge.portable.errors import AgentInputError

ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}  # HF model_type → llama.cpp architecture


@dataclass(frozen=True)
class GgufExport:
    path: Path
    rank: int
    arch: str
    tensors: int
    base: Path | None = None  # the base folder whose config.json gave the architecture


def llama_permute(w: torch.Tensor, n_head: int, n_head_kv: int | None = None) -> torch.Tensor:
    """llama.cpp's row permutation of q / k weights (convert_hf_to_gguf.LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def base_config(base: Path) -> dict:
    path = Path(base) / "config.json"
    try:
        cfg = limits.read_json(path, "base config")
    except AgentInputError:
        raise BadInputError(f"--base {base}: no readable config.json; pass the base model's local folder") from None
    if not isinstance(cfg, dict):
        raise BadInputError(f"--base {base}: config.json is not a JSON object; pass the base model's local folder")
    if cfg.get("model_type") not in ARCHS:
        raise BadInputError(f"--base {base}: model_type {cfg.get('model_type')!r}; the GGUF export knows "
                            f"{', '.join(sorted(ARCHS))} (or export a full model with --to model)")
    return cfg


def base_folder(reader: AdapterReader, base: Path | None, log=None) -> Path:
    """--base, or else the adapter's base_model_name_or_path when that is a local folder with a config.json."""
    if base is not None:
        return Path(base)
    named = reader.settings.base_model
    if named and Path(named).expanduser().is_dir() and (Path(named).expanduser() / "config.json").is_file():
        if log is not None:
            log(f"using the adapter's base_model_name_or_path {named} for the architecture (pass --base to override)")
        return Path(named).expanduser()
    raise BadInputError(f"--to gguf needs --base, the base model's local folder (for its architecture): the "
                        f"adapter's base_model_name_or_path ({named!r}) is not a local model folder")


def export_gguf(adapter: Path, base: Path | None, out: Path, *, force: bool = False, log=None) -> GgufExport:
    reader = AdapterReader(adapter, "adapter")
    base = base_folder(reader, base, log)
    refuse_overlap(out, {"the input adapter": adapter, "the base model": base}, "write the .gguf elsewhere")
    if not installed("gguf"):
        raise BadInputError("--to gguf needs the gguf package (llama.cpp's writer): pip install 'tiesmerge[eval]' "
                            "or pip install gguf")
    import gguf
    import numpy as np

    if any(e.embedding for e in reader.modules.values()) or reader.passthrough:
        raise BadInputError("the GGUF export takes LoRA on linear layers only; export a full model with --to model")
    cfg = base_config(base)
    arch = ARCHS[cfg["model_type"]]
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), int(cfg["num_hidden_layers"]))
    rank = max(e.rank for e in reader.modules.values())
    out = user_path(out, "output").absolute()
    check_name_length(out)
    if out.is_dir():
        raise BadInputError(f"output {out} is a folder; the GGUF export writes one file (e.g. -o merged-lora.gguf)")
    if out.exists() and not force:
        raise BadInputError(f"output {out} exists; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (disk_error(exc, out) or exc) from None
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
        for name, entry in reader.modules.items():
            mapped = names.get_name(name)
            if mapped is None:
                raise BadInputError(f"{name}: llama.cpp has no {arch} tensor for this module")
            a, b = reader.factors(name)
            a_pad = torch.zeros((rank, entry.d_in))
            b_pad = torch.zeros((entry.d_out, rank))
            a_pad[: entry.rank] = a
            b_pad[:, : entry.rank] = b * entry.scale
            if not torch.isfinite(b_pad).all():
                raise BadInputError(f"module {name}: B × its scale overflows float32; the adapter's lora_alpha or "
                                    "factors are out of range (nothing was written)")
            if arch == "llama" and name.endswith(("q_proj", "k_proj")):
                heads = int(cfg["num_attention_heads"])
                kv = int(cfg.get("num_key_value_heads") or heads) if name.endswith("k_proj") else heads
                b_pad = llama_permute(b_pad, heads, kv)
            writer.add_tensor(f"{mapped}.weight.lora_a", a_pad.numpy().astype(np.float32))
            writer.add_tensor(f"{mapped}.weight.lora_b", b_pad.numpy().astype(np.float32))
            count += 2
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    replace_file(out, write)
    return GgufExport(out, rank, arch, count, base)
