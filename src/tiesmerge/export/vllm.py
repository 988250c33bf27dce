"""A LoRA adapter vLLM loads with exactly the intended ΔW.

vLLM (`vllm/lora/peft_helper.py`) ignores `rank_pattern` / `alpha_pattern`, applies one global scale α/r (α/√r with
`use_rslora`), pads every module to `--max-lora-rank` (one of 1, 8, 16, 32, 64, 128, 256, 320, 512), and refuses
DoRA and `modules_to_save`. So the export writes every module at one rank R from that set (zero rows / columns pad
exactly), folds each module's own scale s_m into B, and sets r = lora_alpha = R, use_rslora false, no patterns: vLLM's
scale is 1 and B′A′ = s_m B A for every module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.adapters.writer import StreamingSafetensorsWriter, leaf_names
from tiesmerge.atomic import atomic_output_dir, refuse_overlap
from tiesmerge.errors import BadInputError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VllmExport:
    path: Path
    rank: int
    modules: int


def vllm_rank(rank: int) -> int:
    """The smallest rank vLLM accepts (`--max-lora-rank`) that holds `rank`."""
    for allowed in VLLM_RANKS:
        if allowed >= rank:
            return allowed
    raise BadInputError(f"the adapter has rank {rank}; vLLM accepts LoRA ranks up to {VLLM_RANKS[-1]}: merge or "
                        f"re-factorise it at a lower rank first (tiesmerge merge … --rank {VLLM_RANKS[-1]})")


def overflow(module: str, dtype) -> str:
    return (f"module {module}: B × its scale overflows {str(dtype).removeprefix('torch.')}; the adapter's lora_alpha "
            "or factors are out of range (nothing was written)")


def check_for_vllm(reader: AdapterReader) -> None:
    raw = reader.settings.raw
    if raw.get("use_dora"):
        raise BadInputError("vLLM refuses DoRA adapters; merge plain-LoRA adapters")
    embedded = [m for m, e in reader.modules.items() if e.embedding]
    if embedded:
        raise BadInputError(f"vLLM does not take LoRA on embeddings as PEFT saves them ({embedded[0]}); export a "
                            "full model with --to model instead")
    if raw.get("modules_to_save") or reader.passthrough:
        raise BadInputError("vLLM refuses adapters with modules_to_save / saved base-layer weights; re-save without "
                            "them, or export a full model with --to model")


def export_vllm(adapter: Path, out: Path, *, force: bool = False, progress=None) -> VllmExport:
    reader = AdapterReader(adapter, "adapter")
    refuse_overlap(out, {"the input adapter": adapter}, "write the export to a separate folder")
    check_for_vllm(reader)
    rank = vllm_rank(max(e.rank for e in reader.modules.values()))
    names = list(reader.modules)
    with atomic_output_dir(out, force) as tmp:
        with StreamingSafetensorsWriter(tmp / "adapter_model.safetensors", metadata={"format": "pt"}) as writer:
            for done, name in enumerate(names):
                entry = reader.modules[name]
                a, b = reader.factors(name)
                a_pad = torch.zeros((rank, entry.d_in), dtype=torch.float32)
                b_pad = torch.zeros((entry.d_out, rank), dtype=torch.float32)
                a_pad[: entry.rank] = a
                b_pad[:, : entry.rank] = b * entry.scale
                b_out = b_pad.to(entry.dtype)
                if not torch.isfinite(b_out).all():
                    raise BadInputError(overflow(name, entry.dtype))
                writer.add(entry.a_key, a_pad.to(entry.dtype))
                writer.add(entry.b_key, b_out)
                if progress:
                    progress(done + 1, len(names), name)
        cfg = dict(reader.settings.raw)
        cfg.update({"r": rank, "lora_alpha": rank, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
                    "target_modules": leaf_names(names)})
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return VllmExport(Path(out), rank, len(names))
