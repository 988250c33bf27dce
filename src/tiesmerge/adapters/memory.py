"""An adapter held in memory — factor tensors and its PEFT scale(s) — that the merge reads exactly as it reads a
folder (the AdapterReader interface), so the in-memory merge and the PEFT drop-in run the same code as the CLI."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from tiesmerge.adapters.config import LoraSettings
from tiesmerge.adapters.reader import ModuleEntry, natural_key
from tiesmerge.errors import BadInputError


@dataclass(frozen=True)
class LoraFactors:
    """One LoRA adapter in memory.

    `factors`: module name (as in the base, e.g. `model.layers.0.self_attn.q_proj`) → (A [r, in], B [out, r]).
    `scale`: PEFT's scaling of each module — one number, or per module (alpha/r, or alpha/√r with RSLoRA);
    `LoraFactors.from_config` computes it from an adapter_config-style mapping.

    Example: LoraFactors({"model.layers.0.self_attn.q_proj": (A, B)}, scale=2.0)
    """

    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float | Mapping[str, float] = 1.0
    base_model: str | None = None
    embedding: frozenset[str] = field(default_factory=frozenset)  # modules that are Embedding LoRA
    task_type: str | None = None  # PEFT's task_type, carried into the merged config

    @classmethod
    def from_config(cls, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], config: Mapping[str, Any]
                    ) -> "LoraFactors":
        """With PEFT's rule: r / lora_alpha / use_rslora and rank_pattern / alpha_pattern from `config` (a dict, or
        PEFT's LoraConfig), checked exactly as an adapter_config.json on disk is (`use_rslora: "false"`, `r: 0` or
        `r: -4` are refused, not coerced)."""
        from tiesmerge.adapters.config import settings_from_raw

        if hasattr(config, "to_dict") and not isinstance(config, Mapping):
            config = config.to_dict()
        settings = settings_from_raw(config, "LoraFactors.from_config", Path("<config>"), peft_type_required=False)
        return cls(factors, {m: settings.scale_of(m) for m in factors}, config.get("base_model_name_or_path"),
                   task_type=config.get("task_type"))

    def scale_of(self, module: str) -> float:
        return float(self.scale[module] if isinstance(self.scale, Mapping) else self.scale)


class MemoryAdapter:
    """LoraFactors behind the AdapterReader interface (name, path, settings, modules, factors, tensor, sha256)."""

    def __init__(self, adapter: LoraFactors, name: str):
        self.name = name
        self.path = Path(f"<memory:{name}>")
        self.weights_path = self.path
        self.warnings: list[str] = []
        self.passthrough: tuple[str, ...] = ()
        self._adapter = adapter
        if not adapter.factors:
            raise BadInputError(f"adapter {name!r}: no modules (give module name → (A, B))")
        entries = {}
        for module, pair in adapter.factors.items():
            entries[module] = self._entry(module, pair, adapter)
        self.modules: dict[str, ModuleEntry] = dict(sorted(entries.items(), key=lambda kv: natural_key(kv[0])))
        ranks = [e.rank for e in self.modules.values()]
        self.settings = LoraSettings(path=self.path, r=max(set(ranks), key=ranks.count), lora_alpha=1.0,
                                     use_rslora=False, base_model=adapter.base_model, task_type=adapter.task_type)

    def _entry(self, module: str, pair, adapter: LoraFactors) -> ModuleEntry:
        label = f"adapter {self.name!r}: module {module!r}"
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise BadInputError(f"{label}: expected a pair (A, B) of tensors") from None
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() != 2 or b.dim() != 2:
            raise BadInputError(f"{label}: A and B must be 2-D tensors (A [r, in], B [out, r])")
        if a.shape[0] != b.shape[1]:
            raise BadInputError(f"{label}: A is {list(a.shape)} and B {list(b.shape)}: their ranks differ "
                                "(A [r, in], B [out, r])")
        if not a.is_floating_point() or not b.is_floating_point():
            raise BadInputError(f"{label}: A and B must be floating point")
        if a.is_meta or b.is_meta:
            raise BadInputError(f"{label}: A and B are meta tensors (shapes without data — a model built with "
                                "init_empty_weights or device_map='meta'); load the weights before merging")
        scale = adapter.scale_of(module)
        if not math.isfinite(scale):
            raise BadInputError(f"{label}: its scale {scale} is not finite")
        return ModuleEntry(name=module, a_key=f"base_model.model.{module}.lora_A.weight",
                           b_key=f"base_model.model.{module}.lora_B.weight", rank=a.shape[0], d_out=b.shape[0],
                           d_in=a.shape[1], embedding=module in adapter.embedding, scale=scale, dtype=a.dtype)

    def factors(self, module: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self._adapter.factors[module]
        a = a.detach().to(device=device, dtype=torch.float32)
        b = b.detach().to(device=device, dtype=torch.float32)
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise BadInputError(f"adapter {self.name!r}: module {module!r} has NaN or Inf factors")
        return a, b

    def tensor(self, key: str) -> torch.Tensor:
        raise KeyError(key)

    def delta(self, module: str, device: torch.device | str = "cpu") -> torch.Tensor:
        a, b = self.factors(module, device)
        return (b * self.modules[module].scale) @ a

    def sha256(self, stop=None) -> str:
        h = hashlib.sha256()
        for module, entry in self.modules.items():
            a, b = self._adapter.factors[module]
            h.update(module.encode())
            h.update(repr(entry.scale).encode())
            for t in (a, b):
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    @property
    def parameter_count(self) -> int:
        return sum(e.rank * (e.d_in + e.d_out) for e in self.modules.values())
