"""Write a PEFT LoRA adapter: a streaming safetensors writer and the adapter config."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Mapping, Sequence

import torch

_BLOCK = 1 << 24  # bytes moved per step when the header is put in front of the data

_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
}


class StreamingSafetensorsWriter:
    """Append tensors one at a time to a data file, then write header + data as one safetensors file.
    Use it as a context manager: `with StreamingSafetensorsWriter(path) as w: w.add(…)`.

    Only the tensor being added is in memory, so writing a large merged adapter does not hold
    the whole state dict (the format needs the header first, hence the separate data file).
    """

    def __init__(self, path: Path, metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self._data_path = self.path.with_name(self.path.name + ".data")
        self._data = open(self._data_path, "wb")
        self._header: dict[str, dict] = {}
        self._offset = 0
        self._metadata = dict(metadata or {})

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self._header:
            raise ValueError(f"duplicate tensor key {key!r}")
        t = tensor.detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        self._data.write(raw)
        self._header[key] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [self._offset, self._offset + len(raw)],
        }
        self._offset += len(raw)

    def close(self) -> None:
        """Put the header in front of the data in place: the data moves up by the header's size, last block first,
        so the file never needs more disk than its own size (no second copy)."""
        self._data.close()
        header = dict(self._header)
        if self._metadata:
            header["__metadata__"] = self._metadata
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # safetensors aligns the data start to 8 bytes
        head = struct.pack("<Q", len(blob)) + blob
        size = self._offset
        with open(self._data_path, "r+b") as f:
            f.truncate(size + len(head))
            end = size
            while end > 0:
                start = max(0, end - _BLOCK)
                f.seek(start)
                block = f.read(end - start)
                f.seek(start + len(head))
                f.write(block)
                end = start
            f.seek(0)
            f.write(head)
        os.replace(self._data_path, self.path)

    def abort(self) -> None:
        self._data.close()
        self._data_path.unlink(missing_ok=True)

    def __enter__(self) -> "StreamingSafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close (write the file) when the block succeeds; abort (remove the partial data) when it raises —
        including when close itself fails on a full disk."""
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise


def leaf_names(modules: Sequence[str]) -> list[str]:
    return sorted({m.rsplit(".", 1)[-1] for m in modules})


def exact_target_regex(modules: Sequence[str]) -> str:
    """A target_modules regex (PEFT full-matches it) that selects exactly these modules."""
    return "(?:" + "|".join(re.escape(m) for m in modules) + ")"


def lora_config(
    *,
    modules: Sequence[str],
    ranks: Mapping[str, int],
    base_model: str | None,
    task_type: str | None,
    fan_in_fan_out: bool,
    exact_targets: bool,
) -> dict:
    """A plain PEFT LoRA config whose scaling is exactly 1 in every module.

    r = lora_alpha = the most common rank; modules of another rank get equal entries in
    rank_pattern and alpha_pattern, so α/r = 1 everywhere, and use_rslora is false.
    """
    values = list(ranks.values())
    r = max(set(values), key=lambda v: (values.count(v), v))
    pattern = {m: k for m, k in ranks.items() if k != r}
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": r,
        "use_rslora": False,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": exact_target_regex(modules) if exact_targets else leaf_names(modules),
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "lora_dropout": 0.0,
        "use_dora": False,
        "lora_bias": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
