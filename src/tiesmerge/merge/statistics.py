"""Calibration statistics: per adapter, the Gram matrix G = E[x xᵀ] of every targeted linear's input, collected with
that adapter active on its own prompts (`tiesmerge calibrate`). One safetensors file per adapter — a tensor per
module, named as the adapter names it — whose metadata ties it to the adapter (content digest), the base and the
prompts, so a merge refuses statistics of anything else. Read lazily, one module at a time (the merge stays
base-free and streams)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from tiesmerge.cache import adapter_digest
from tiesmerge.errors import BadInputError

FORMAT = "tiesmerge-statistics"
VERSION = 1
FORM = "gram"  # the full d_in × d_in second moment of the layer's input


@dataclass(frozen=True)
class StatisticsMeta:
    adapter_digest: str
    base: str
    prompts_digest: str
    prompt_format: str
    prompts: int
    tokens: int
    form: str = FORM
    inputs: str = "specialist"  # specialist: each adapter alone (RegMean); merged: the partially merged model (++)
    merged_with: dict | None = None  # inputs "merged": the merge parameters the earlier blocks carried
    collected_with: dict | None = None  # the base's fingerprint, dtype and quantization (None: files before 2026-12-07)

    def as_metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "version": str(VERSION), "meta": json.dumps(self.__dict__)}


class StatisticsFile:
    """One adapter's statistics, checked against the adapter at open; `gram(module)` reads one module's."""

    def __init__(self, path: Path, adapter_name: str, adapter_path: Path):
        from safetensors import SafetensorError, safe_open

        self.path, label = Path(path), f"statistics of adapter {adapter_name!r} ({path})"
        if not self.path.is_file():
            raise BadInputError(f"{label}: file not found; make it with `tiesmerge calibrate`")
        try:
            with safe_open(str(self.path), framework="pt") as fh:
                raw = fh.metadata() or {}
                self.keys = set(fh.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadInputError(f"{label}: not a readable statistics file ({exc}); make it again with "
                                "`tiesmerge calibrate`") from None
        if raw.get("format") != FORMAT:
            raise BadInputError(f"{label}: not a tiesmerge statistics file; make it with `tiesmerge calibrate`")
        if raw.get("version") != str(VERSION):
            raise BadInputError(f"{label}: statistics format {raw.get('version')} (this tiesmerge reads {VERSION}); "
                                "make them again with `tiesmerge calibrate`")
        try:
            self.meta = StatisticsMeta(**json.loads(raw["meta"]))
        except (KeyError, TypeError, ValueError):
            raise BadInputError(f"{label}: damaged metadata; make them again with `tiesmerge calibrate`") from None
        if self.meta.form != FORM:
            raise BadInputError(f"{label}: statistics of form {self.meta.form!r}, RegMean needs {FORM!r}")
        if self.meta.adapter_digest != adapter_digest(adapter_path):
            raise BadInputError(f"{label}: collected for another adapter (its content differs from {adapter_path}); "
                                "run `tiesmerge calibrate` on this adapter set")

    def check_modules(self, shapes: Mapping[str, int]) -> None:
        """Every module to merge has a Gram of its input size."""
        from safetensors import safe_open

        missing = [m for m in shapes if m not in self.keys]
        if missing:
            raise BadInputError(f"statistics {self.path}: no Gram for module {missing[0]} ({len(missing)} missing); "
                                "they were collected for other targets — run `tiesmerge calibrate` again")
        with safe_open(str(self.path), framework="pt") as fh:
            for m, d_in in shapes.items():
                shape = fh.get_slice(m).get_shape()
                if list(shape) != [d_in, d_in]:
                    raise BadInputError(f"statistics {self.path}: {m}'s Gram is {shape}, the module's input has "
                                        f"{d_in} features; these statistics belong to another model")

    def gram(self, module: str, device: torch.device | str = "cpu") -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt", device=str(device)) as fh:
            g = fh.get_tensor(module)
        if not torch.isfinite(g).all():
            raise BadInputError(f"statistics {self.path}: {module}'s Gram is not finite")
        return g
