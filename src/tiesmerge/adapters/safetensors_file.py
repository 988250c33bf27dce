"""A safetensors reader that reads each tensor with pread instead of memory-mapping the file.

safetensors' safe_open maps the whole file, and every page a merge touches stays in the process's
resident set until the file is closed: merging four 3.4 GB adapters showed 14 GiB peak RSS although
the merge itself needs far less. Reading tensor by tensor keeps RSS to what is in use. The header is
checked the way the safetensors library checks it (size, JSON, offsets covering the data exactly).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (F32, BF16, …)."""
    return _DTYPES[name]


def _is_int(value: object) -> bool:
    """A JSON integer (the safetensors library refuses strings, floats and booleans in shapes and offsets)."""
    return isinstance(value, int) and not isinstance(value, bool)


class SafetensorsFormatError(ValueError):
    """The file is not a complete, well-formed safetensors file."""


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SafetensorsFormatError("header too small")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise SafetensorsFormatError("header length exceeds the file")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SafetensorsFormatError(f"header is not valid JSON ({exc})") from None
            except RecursionError:
                raise SafetensorsFormatError("header is nested too deeply to be a safetensors header") from None
        if not isinstance(header, dict):
            raise SafetensorsFormatError("header is not a JSON object")
        self.metadata = header.pop("__metadata__", None)
        if self.metadata is not None and not (isinstance(self.metadata, dict)
                                              and all(isinstance(v, str) for v in self.metadata.values())):
            raise SafetensorsFormatError("__metadata__ must map strings to strings")
        self._start = 8 + n
        self._entries: dict[str, tuple[str, list[int], int, int]] = {}
        spans = []
        for key, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise SafetensorsFormatError(f"bad header entry for {key!r}") from None
            if not isinstance(dtype, str) or dtype not in _DTYPES:
                raise SafetensorsFormatError(f"unknown dtype {dtype!r} for {key!r}")
            if not all(_is_int(v) for v in (*shape, begin, end)):
                raise SafetensorsFormatError(f"shape / data_offsets of {key!r} are not integers "
                                             f"({info['shape']!r}, {info['data_offsets']!r})")
            if any(d < 0 for d in shape) or len(shape) > 8:
                raise SafetensorsFormatError(f"shape of {key!r} is not a tensor shape ({shape!r})")
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * _DTYPES[dtype].itemsize or begin < 0:
                raise SafetensorsFormatError(f"offsets of {key!r} do not match its shape and dtype")
            self._entries[key] = (dtype, shape, begin, end)
            spans.append((begin, end))
        covered = 0
        for begin, end in sorted(spans):
            if begin != covered:
                raise SafetensorsFormatError("tensor data has gaps or overlaps")
            covered = end
        if self._start + covered != size:
            raise SafetensorsFormatError("incomplete file: the data does not cover the file exactly (truncated?)")

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key][1])

    def dtype_name(self, key: str) -> str:
        return self._entries[key][0]

    def get_tensor(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[key]
        buf = bytearray(end - begin)
        with open(self.path, "rb", buffering=0) as fh:
            view, offset = memoryview(buf), self._start + begin
            while view:
                n = os.preadv(fh.fileno(), [view], offset) if hasattr(os, "preadv") else fh.readinto(view)
                if n <= 0:
                    raise OSError(f"short read of {key!r}")
                view, offset = view[n:], offset + n
        if not buf:
            return torch.empty(shape, dtype=_DTYPES[dtype])
        return torch.frombuffer(buf, dtype=_DTYPES[dtype]).reshape(shape)
