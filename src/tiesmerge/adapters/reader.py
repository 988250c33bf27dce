"""Lazy reader of one PEFT LoRA adapter directory: headers at open, one module's factors on demand."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tiesmerge.adapters.config import LoraSettings, read_lora_settings
from tiesmerge.adapters.safetensors_file import SafetensorsFile, SafetensorsFormatError, torch_dtype
from tiesmerge.errors import BadInputError

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"

# Linear layers save `<module>.lora_A.weight`; embeddings save `<module>.lora_embedding_A`.
_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight$|^(?P<emodule>.+)\.(?P<ekind>lora_embedding_A|lora_embedding_B)$")
_PEFT_PREFIX = "base_model.model."
_BASE_LAYER = ".base_layer.weight"

_FLOATS = ("F32", "F16", "BF16", "F64")  # LoRA factors must be floating point

_CONVERT_HINT = (
    "tiesmerge never unpickles files. Convert it once, in an environment you trust: "
    "python -c \"import torch; from safetensors.torch import save_file; "
    "save_file(torch.load('adapter_model.bin', weights_only=True), 'adapter_model.safetensors')\""
)


@dataclass(frozen=True)
class ModuleEntry:
    """One LoRA-adapted module of an adapter, described from the safetensors header only."""

    name: str  # the module's name in the base model, e.g. model.layers.0.self_attn.q_proj
    a_key: str
    b_key: str
    rank: int
    d_out: int
    d_in: int
    embedding: bool
    scale: float
    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d_out, self.d_in)


class AdapterReader:
    """Open an adapter directory, check it, and index its modules without loading tensors."""

    def __init__(self, path: Path, name: str):
        self.name = name
        self.path = Path(path)
        label = f"adapter {name!r} ({self.path})"
        if not self.path.exists():
            raise BadInputError(f"{label}: path does not exist")
        if not self.path.is_dir():
            raise BadInputError(f"{label}: not a directory; pass the folder holding adapter_config.json")
        self.settings: LoraSettings = read_lora_settings(self.path, f"adapter {name!r}")
        self.weights_path = self.path / WEIGHTS_NAME
        self.passthrough: tuple[str, ...] = ()  # base-layer weights saved beside embedding LoRA
        if not self.weights_path.is_file():
            if (self.path / PICKLE_NAME).is_file():
                raise BadInputError(f"{label}: only {PICKLE_NAME} (a pickle) is present. {_CONVERT_HINT}")
            raise BadInputError(f"{label}: no {WEIGHTS_NAME} in the adapter directory")
        try:
            self._file = SafetensorsFile(self.weights_path)
            keys = self._file.keys()
        except (SafetensorsFormatError, OSError) as exc:
            raise BadInputError(
                f"{label}: {WEIGHTS_NAME} is corrupt or truncated ({exc}); re-copy or re-save the adapter"
            ) from None
        self.modules: dict[str, ModuleEntry] = self._index(keys, label)
        if not self.modules:
            raise BadInputError(f"{label}: {WEIGHTS_NAME} holds no LoRA tensors")

    # -- indexing --------------------------------------------------------------------------------
    def _index(self, keys: list[str], label: str) -> dict[str, ModuleEntry]:
        pairs: dict[str, dict[str, str]] = {}
        # PEFT saves the (possibly resized) base weights of targeted embeddings beside their LoRA
        # factors; they are not a delta, so they are carried through unchanged (see compat.py).
        self.passthrough: tuple[str, ...] = tuple(k for k in keys if k.endswith(_BASE_LAYER))
        for key in keys:
            if key.endswith(_BASE_LAYER):
                continue
            m = _KEY.match(key)
            if m is None:
                raise BadInputError(
                    f"{label}: tensor {key!r} is not a LoRA factor (lora_A / lora_B); "
                    "extra trained tensors (DoRA magnitudes, biases, modules_to_save) are not supported"
                )
            module = m.group("module") or m.group("emodule")
            kind = (m.group("kind") or m.group("ekind"))[-1]  # "A" or "B"
            embedding = m.group("ekind") is not None
            pairs.setdefault(module, {})[kind + ("e" if embedding else "")] = key
        entries = {}
        for full, found in pairs.items():
            embedding = any(k.endswith("e") for k in found)
            a_key, b_key = found.get("Ae" if embedding else "A"), found.get("Be" if embedding else "B")
            if a_key is None or b_key is None:
                raise BadInputError(f"{label}: module {full!r} has only one of lora_A / lora_B")
            entry = self._entry(full, a_key, b_key, embedding, label)
            entries[entry.name] = entry
        return dict(sorted(entries.items(), key=lambda kv: natural_key(kv[0])))

    def _entry(self, full: str, a_key: str, b_key: str, embedding: bool, label: str) -> ModuleEntry:
        a_shape, b_shape = self._file.shape(a_key), self._file.shape(b_key)
        name = full[len(_PEFT_PREFIX):] if full.startswith(_PEFT_PREFIX) else full
        if len(a_shape) != 2 or len(b_shape) != 2:
            raise BadInputError(
                f"{label}: module {name!r} has {len(a_shape)}-D factors (convolution LoRA?); "
                "only Linear and Embedding LoRA are supported"
            )
        if a_shape[0] != b_shape[1]:
            raise BadInputError(
                f"{label}: module {name!r} has lora_A {list(a_shape)} and lora_B {list(b_shape)}, whose ranks differ"
            )
        rank = a_shape[0]
        cfg_rank = self.settings.rank_of(name)
        if cfg_rank != rank:
            raise BadInputError(
                f"{label}: adapter_config says r={cfg_rank} for {name!r} but its lora_A has {rank} rows; "
                "fix r / rank_pattern in adapter_config.json"
            )
        dtype_name = self._file.dtype_name(a_key)
        if dtype_name not in _FLOATS or self._file.dtype_name(b_key) not in _FLOATS:
            raise BadInputError(f"{label}: module {name!r} has non-float factors ({dtype_name})")
        return ModuleEntry(
            name=name,
            a_key=a_key,
            b_key=b_key,
            rank=rank,
            d_out=b_shape[0],
            d_in=a_shape[1],
            embedding=embedding,
            scale=self.settings.scale_of(name),
            dtype=torch_dtype(dtype_name),
        )

    # -- loading ---------------------------------------------------------------------------------
    def factors(self, module: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of one module in fp32 on `device`; raises BadInputError on NaN/Inf."""
        entry = self.modules[module]
        out = []
        for key in (entry.a_key, entry.b_key):
            try:
                t = self._file.get_tensor(key)
            except OSError as exc:
                raise BadInputError(f"adapter {self.name!r}: cannot read {key!r} ({exc})") from None
            t = t.to(device=device, dtype=torch.float32)
            if not torch.isfinite(t).all():
                raise BadInputError(
                    f"adapter {self.name!r}: {key!r} contains NaN or Inf; the adapter is broken "
                    "(re-train or re-export it)"
                )
            out.append(t)
        return out[0], out[1]

    def tensor(self, key: str) -> torch.Tensor:
        """A stored tensor as is (used for pass-through base-layer weights)."""
        try:
            return self._file.get_tensor(key)
        except OSError as exc:
            raise BadInputError(f"adapter {self.name!r}: cannot read {key!r} ({exc})") from None

    def delta(self, module: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """ΔW = s · B · A of one module, fp32, shape (d_out, d_in)."""
        a, b = self.factors(module, device)
        return (b * self.modules[module].scale) @ a

    def sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.weights_path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    @property
    def parameter_count(self) -> int:
        return sum(e.rank * (e.d_in + e.d_out) for e in self.modules.values())


def natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
