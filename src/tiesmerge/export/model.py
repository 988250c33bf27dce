"""The base model with the adapter's ΔW folded into its weights: a plain full model (no LoRA at serving time).

Streams one tensor at a time: each base shard is read tensor by tensor, a targeted weight gets W + ΔW (computed in
float32, stored in the weight's own dtype), and the shard is written under its own name, so the index file and every
other file of the base (config, tokenizer, generation config) carry over unchanged. Peak memory is one weight and
one ΔW — a 72B bf16 base does not need 145 GB of RAM.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tiesmerge.adapters.base_fit import check_reader_fits
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.adapters.safetensors_file import SafetensorsFile, SafetensorsFormatError
from tiesmerge.adapters.writer import StreamingSafetensorsWriter
from tiesmerge.atomic import atomic_output_dir, ensure_free_space, refuse_overlap
from tiesmerge.errors import BadInputError


@dataclass(frozen=True)
class ModelExport:
    path: Path
    shards: int
    folded: int


def base_shards(base: Path) -> list[Path]:
    if not base.is_dir():
        raise BadInputError(f"--base {base}: not a folder; pass the base model's local folder (safetensors weights)")
    shards = sorted(base.glob("*.safetensors"))
    if not shards:
        if list(base.glob("*.bin")):
            raise BadInputError(f"--base {base}: only pickle (.bin) weights; tiesmerge never unpickles files — save "
                                "the base with safetensors first (save_pretrained(..., safe_serialization=True))")
        raise BadInputError(f"--base {base}: no *.safetensors weights in the folder")
    return shards


def folded_delta(reader: AdapterReader, name: str) -> torch.Tensor:
    """ΔW laid out like the base weight: (out, in) for Linear, transposed for fan_in_fan_out and embeddings."""
    entry = reader.modules[name]
    delta = reader.delta(name)
    return delta.T if (entry.embedding or reader.settings.fan_in_fan_out) else delta


def export_model(adapter: Path, base: Path, out: Path, *, force: bool = False, progress=None) -> ModelExport:
    reader = AdapterReader(adapter, "adapter")
    # PEFT saves the base weights of targeted embeddings beside their LoRA and loads them over the base's: fold onto
    # those, as PEFT would run them
    saved_base = {k.removeprefix("base_model.model.").removesuffix(".base_layer.weight"): k for k in reader.passthrough}
    base = Path(base)
    shards = base_shards(base)
    refuse_overlap(out, {"the input adapter": adapter, "the base model": base}, "write the model to a new folder")
    check_reader_fits(reader, base, "adapter")
    ensure_free_space(Path(out).absolute().parent, sum(s.stat().st_size for s in shards), "the full model")
    wanted = {f"{name}.weight": name for name in reader.modules}
    folded = 0
    with atomic_output_dir(out, force) as tmp:
        for path in sorted(base.iterdir()):
            if path.is_file() and path.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".gguf"):
                shutil.copy2(path, tmp / path.name)
        for i, shard in enumerate(shards):
            try:
                source = SafetensorsFile(shard)
            except (SafetensorsFormatError, OSError) as exc:
                raise BadInputError(f"--base {base}: cannot read {shard.name} ({exc})") from None
            with StreamingSafetensorsWriter(tmp / shard.name, metadata={"format": "pt"}) as writer:
                for key in source.keys():
                    tensor = source.get_tensor(key)
                    name = wanted.get(key) or wanted.get(key.removeprefix("model.")) or wanted.get(f"model.{key}")
                    if name is not None:
                        if name in saved_base:
                            own = reader.tensor(saved_base[name])
                            if tuple(own.shape) != tuple(tensor.shape):
                                raise BadInputError(f"{key}: the adapter saved a resized {list(own.shape)} weight "
                                                    f"(base: {list(tensor.shape)}); a resized vocabulary cannot be "
                                                    "folded into this base")
                            tensor = own
                        delta = folded_delta(reader, name)
                        if tuple(delta.shape) != tuple(tensor.shape):
                            raise BadInputError(f"{key}: base weight {list(tensor.shape)} does not match the "
                                                f"adapter's ΔW {list(delta.shape)}; is --base the adapter's base?")
                        tensor = (tensor.float() + delta).to(tensor.dtype)
                        if not torch.isfinite(tensor).all():
                            raise BadInputError(f"{key}: W + ΔW overflows {str(tensor.dtype).removeprefix('torch.')}; "
                                                "the adapter's scale or factors are out of range (nothing was written)")
                        folded += 1
                    writer.add(key, tensor)
            if progress:
                progress(i + 1, len(shards), shard.name)
        if folded != len(wanted):
            raise BadInputError(f"only {folded} of the adapter's {len(wanted)} modules have a weight in --base {base}; "
                                "is it the adapter's base model?")
        (tmp / "tiesmerge_export.json").write_text(json.dumps(
            {"adapter": str(adapter), "base": str(base), "folded_modules": folded}, indent=2) + "\n")
    return ModelExport(Path(out), len(shards), folded)
