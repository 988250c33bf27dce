"""Lazy reader of one PEFT LoRA adapter directory: headers at open, one module's factors on demand."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from tiesmerge.adapters.config import CONFIG_NAME, LoraSettings, read_lora_settings
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
        self.warnings: list[str] = []  # one line each, shown before a merge
        label = f"adapter {name!r} ({self.path})"
        check_folder(self.path, label)
        for file in (CONFIG_NAME, WEIGHTS_NAME):
            check_readable(self.path / file, label)
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
        except SafetensorsFormatError as exc:
            raise BadInputError(
                f"{label}: {WEIGHTS_NAME} is corrupt or truncated ({exc}); re-copy or re-save the adapter"
            ) from None
        except OSError as exc:
            raise BadInputError(f"{label}: cannot read {WEIGHTS_NAME}: {exc.strerror or exc}") from None
        self.modules: dict[str, ModuleEntry] = self._index(keys, label)
        if not self.modules:
            raise BadInputError(f"{label}: {WEIGHTS_NAME} holds no LoRA tensors")
        self.warnings += missing_targets(self.settings, self.modules, name)

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
        cfg_rank = self.settings.rank_of(name)
        transposed = (a_shape[1] == cfg_rank and b_shape[0] == cfg_rank
                      and (a_shape[0] != cfg_rank or b_shape[1] != cfg_rank))
        if transposed:
            raise BadInputError(
                f"{label}: module {name!r} has lora_A {list(a_shape)} and lora_B {list(b_shape)}: both look transposed "
                f"or swapped (PEFT stores lora_A as [r, in] and lora_B as [out, r], r = {cfg_rank}); re-save them "
                "transposed, or under each other's names"
            )
        if a_shape[0] != b_shape[1]:
            raise BadInputError(
                f"{label}: module {name!r} has lora_A {list(a_shape)} and lora_B {list(b_shape)}, whose ranks differ"
            )
        rank = a_shape[0]
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
            if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():  # one reduction; the sum is NaN/Inf if any entry is
                raise BadInputError(
                    f"adapter {self.name!r}: {key!r} contains NaN or Inf; the adapter is broken "
                    "(re-train or re-export it)"
                )
            out.append(t)
        return out[0], out[1]

    def tensor_bytes(self, key: str) -> int:
        shape = self._file.shape(key)
        return int(torch.empty((), dtype=torch_dtype(self._file.dtype_name(key))).element_size()
                   * (int(torch.tensor(shape).prod()) if shape else 1))

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

    def sha256(self, stop: threading.Event | None = None) -> str:
        """The weights file's sha256 ('' when `stop` is set before the end)."""
        h = hashlib.sha256()
        with open(self.weights_path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                if stop is not None and stop.is_set():
                    return ""
                h.update(block)
        return h.hexdigest()

    @property
    def parameter_count(self) -> int:
        return sum(e.rank * (e.d_in + e.d_out) for e in self.modules.values())


def check_folder(path: Path, label: str) -> None:
    """The adapter path is a folder this process can list: else one line naming the real cause."""
    try:
        st = os.stat(path)
    except OSError as exc:
        reason = {errno.ENOENT: "path does not exist",
                  errno.ELOOP: "the path is a symlink loop; point it at the real adapter folder",
                  errno.EACCES: "permission denied on the path; make it readable (chmod / run as its owner)",
                  errno.ENOTDIR: "a part of the path is a file, not a folder",
                  errno.ENAMETOOLONG: "the path is too long"}.get(exc.errno, exc.strerror or str(exc))
        raise BadInputError(f"{label}: {reason}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"{label}: not a directory; pass the folder holding adapter_config.json")
    if not os.access(path, os.R_OK | os.X_OK):
        raise BadInputError(f"{label}: permission denied listing the folder; make it readable (chmod / run as its owner)")


def check_readable(file: Path, label: str) -> None:
    """A file of the adapter that exists must be readable (a missing one is reported by the caller)."""
    try:
        with open(file, "rb"):
            pass
    except FileNotFoundError:
        return
    except PermissionError:
        raise BadInputError(f"{label}: permission denied reading {file.name}; make it readable (chmod / run as its "
                            "owner)") from None
    except IsADirectoryError:
        raise BadInputError(f"{label}: {file.name} is a folder, not a file") from None
    except OSError as exc:
        raise BadInputError(f"{label}: cannot read {file.name}: {exc.strerror or exc}") from None


_LAYER = re.compile(r"\.(\d+)\.")


def missing_targets(settings: LoraSettings, modules: Mapping[str, ModuleEntry], name: str) -> list[str]:
    """Warnings for modules the config targets that the weights do not hold: a targeted leaf name with no
    tensors at all, or a leaf held in some layers but not in others (a partial save?)."""
    out = []
    leaves: dict[str, set[int]] = {}
    layers: set[int] = set()
    for module in modules:
        leaf = module.rsplit(".", 1)[-1]
        m = _LAYER.search(module)
        idx = int(m.group(1)) if m else -1
        leaves.setdefault(leaf, set()).add(idx)
        layers.add(idx)
    targets = settings.target_modules
    if isinstance(targets, (list, tuple)):
        absent = sorted(t for t in targets if t not in leaves and not any(k.endswith(t) for k in modules))
        if absent:
            out.append(f"adapter {name!r}: its config targets {', '.join(absent)} but it holds no such tensors "
                       "(those modules get nothing from it)")
    if not settings.layers_restricted:
        for leaf, held in sorted(leaves.items()):
            missing = sorted(layers - held - {-1})
            # held in most layers but not all: a partial save (a leaf in few layers is an architecture's choice)
            if missing and -1 not in held and len(held) > len(missing):
                shown = ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
                out.append(f"adapter {name!r}: holds {leaf} in {len(held)} of {len(layers - {-1})} layers "
                           f"(missing in layer {shown}; a partial save?)")
    return out


def natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
