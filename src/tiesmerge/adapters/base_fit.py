"""Does an adapter fit a base model? Checked from the base's safetensors headers alone (no weights read, no model
built), so `deploy`, `eval`, `export --to model` and `merge --export model` refuse a misfit in a second, before
anything is loaded, copied or merged."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tiesmerge.adapters.compat import swapped_message
from tiesmerge.adapters.reader import ModuleEntry
from tiesmerge.adapters.safetensors_file import SafetensorsFile, SafetensorsFormatError
from tiesmerge.errors import BadInputError


def base_weight_shapes(base: Path) -> dict[str, tuple[int, ...]] | None:
    """Every weight's shape in the base folder's *.safetensors shards (headers only), or None when the folder has
    no safetensors weights to read (a hub id, a GGUF-only folder: the loader reports those)."""
    base = Path(base)
    shards = sorted(base.glob("*.safetensors")) if base.is_dir() else []
    if not shards:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in shards:
        try:
            f = SafetensorsFile(shard)
        except (SafetensorsFormatError, OSError) as exc:
            raise BadInputError(f"base {base}: cannot read {shard.name} ({exc}); re-download the base") from None
        shapes.update({k: f.shape(k) for k in f.keys()})
    return shapes


def _lookup(shapes: dict[str, tuple[int, ...]], module: str) -> tuple[int, ...] | None:
    for key in (f"{module}.weight", f"{module.removeprefix('model.')}.weight", f"model.{module}.weight"):
        if key in shapes:
            return shapes[key]
    return None


def check_fits(entries: Iterable[ModuleEntry], base: Path, label: str, *, fan_in_fan_out: bool = False,
               resized: Iterable[str] = ()) -> int:
    """Raise a one-line BadInputError when a module is missing from the base or has another shape; returns how
    many modules were checked (0 when the base has no safetensors headers to check against). `resized`: modules
    whose base weight the adapter saves itself (a resized vocabulary), skipped."""
    shapes = base_weight_shapes(base)
    if shapes is None:
        return 0
    skip = set(resized)
    checked = 0
    for entry in entries:
        if entry.name in skip:
            continue
        weight = _lookup(shapes, entry.name)
        if weight is None:
            raise BadInputError(f"{label}: module {entry.name!r} has no weight in the base {base}; "
                                "give the base the adapter was trained on")
        # the base stores Linear weights [out, in]; embeddings and fan_in_fan_out (Conv1D) layers [in, out]
        want = (entry.d_in, entry.d_out) if entry.embedding or fan_in_fan_out else (entry.d_out, entry.d_in)
        if tuple(weight) != want:
            if tuple(weight) == want[::-1] and not entry.embedding:
                raise BadInputError(swapped_message(label, entry.name, entry, list(weight), f"the base {base}"))
            raise BadInputError(f"{label}: module {entry.name!r}: the base's weight {list(weight)} does not match the "
                                f"adapter's ΔW {list(want)}: the adapter was trained on another base model; give "
                                "its base (base_model_name_or_path in its adapter_config.json)")
        checked += 1
    return checked


def check_reader_fits(reader, base: Path, label: str) -> int:
    """check_fits for an AdapterReader."""
    resized = [k.removeprefix("base_model.model.").removesuffix(".base_layer.weight") for k in reader.passthrough]
    return check_fits(reader.modules.values(), base, label, fan_in_fan_out=reader.settings.fan_in_fan_out,
                      resized=resized)
