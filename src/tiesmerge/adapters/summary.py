"""What an adapter is, in one mapping: rank, α, RSLoRA flag, scale, targets, size, base (`inspect`, CLI and API)."""

from __future__ import annotations

from tiesmerge.adapters.reader import AdapterReader


def _span(values: list) -> str:
    lo, hi = min(values), max(values)
    fmt = (lambda v: f"{v:g}") if isinstance(lo, float) else str
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def summary(reader: AdapterReader) -> dict:
    mods = list(reader.modules.values())
    return {
        "name": reader.name,
        "path": str(reader.path),
        "rank": _span([m.rank for m in mods]),
        "alpha": _span(sorted({reader.settings.alpha_of(m.name) for m in mods})),
        "rslora": reader.settings.use_rslora,
        "scale": _span([round(m.scale, 6) for m in mods]),
        "targets": sorted({m.name.rsplit(".", 1)[-1] for m in mods}),
        "modules": len(mods),
        "parameters": reader.parameter_count,
        "dtype": sorted({str(m.dtype).removeprefix("torch.") for m in mods}),
        "base_model": reader.settings.base_model,
    }
