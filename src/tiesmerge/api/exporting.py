"""The one export dispatcher: `tiesmerge.export` (an adapter → vLLM / GGUF / full model), and the checks
`merge --export` runs before it merges (`plan_export`). The CLI's `export` and `merge --export` call these."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from tiesmerge.adapters import hub
from tiesmerge.atomic import check_output_dir, refuse_overlap
from tiesmerge.errors import BadInputError
from tiesmerge.export.formats import ExportFormat

PathLike = Union[str, Path]


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


def export(adapter: PathLike, *, to: Any, output: PathLike, base: PathLike | None = None, force: bool = False,
           progress: Optional[Callable[[int, int, str], None]] = None, log: Callable[[str], None] = _log):
    """Export an adapter for a serving stack: `to="vllm"` (uniform rank, scale folded, what vLLM reads right),
    `"gguf"` (a llama.cpp LoRA file; base from `base` or the adapter's local base_model_name_or_path) or
    `"model"` (the base with ΔW folded in; needs `base`). Returns the export's result (`.path`, `.rank`, …).

    Example:

        >>> tiesmerge.export("merged/", to="vllm", output="merged-vllm/").rank
        64
    """
    fmt = ExportFormat.parse(getattr(to, "value", to), "--to")
    adapter = hub.resolve(str(adapter), "adapter", log=log)
    base_dir = hub.resolve(str(base), "base", files=None, log=log) if base is not None else None
    output = Path(output)
    if fmt is ExportFormat.gguf:
        from tiesmerge.export.gguf_lora import export_gguf

        return export_gguf(Path(adapter), Path(base_dir) if base_dir is not None else None, output, force=force,
                           log=log)
    check_output_dir(output, force)
    if fmt is ExportFormat.vllm:
        from tiesmerge.export.vllm import export_vllm

        return export_vllm(Path(adapter), output, force=force, progress=progress)
    if base_dir is None:
        raise BadInputError("--to model needs --base, the base model's local folder")
    from tiesmerge.export.model import export_model

    return export_model(Path(adapter), Path(base_dir), output, force=force, progress=progress)


@dataclass(frozen=True)
class ExportPlan:
    """`merge --export`, checked before the merge: the format, where it goes, the base folder."""

    format: ExportFormat
    target: Path
    base: Optional[Path]
    force: bool


def plan_export(to: Any, base: PathLike | None, output: Path, force: bool, job,
                log: Callable[[str], None] = _log) -> ExportPlan:
    """Check `merge --export` before the merge runs: the target path, the base folder (given, or the adapters' local
    base_model_name_or_path) and that the merged modules fit the base's weights."""
    fmt = ExportFormat.parse(getattr(to, "value", to), "--export")
    if base is not None:
        base = hub.resolve(str(base), "--export-base", files=None, log=log)
    named = job.plan.base_model
    if fmt is not ExportFormat.vllm and base is None:
        if named and Path(named).expanduser().is_dir() and (Path(named).expanduser() / "config.json").is_file():
            base = Path(named).expanduser()
            log(f"--export {fmt.value} uses the adapters' base_model_name_or_path {named} (pass --export-base to "
                "override)")
        else:
            raise BadInputError(f"--export {fmt.value} needs --export-base, the base model's local folder "
                                f"(the adapters' base_model_name_or_path {named!r} is not a local model folder)")
    target = Path(f"{output}.gguf") if fmt is ExportFormat.gguf else Path(f"{output}-{fmt.value}")
    inputs = {f"input adapter {r.name!r}": r.path for r in job.readers} | {"the base model": base}
    refuse_overlap(target, inputs, "choose another -o")
    if fmt is ExportFormat.gguf:
        from tiesmerge.export.gguf_lora import base_config

        base_config(Path(base))
        if target.exists() and not force:
            raise BadInputError(f"output {target} exists; pass --force to replace it")
    else:
        check_output_dir(target, force)
    if fmt is ExportFormat.model:
        from tiesmerge.adapters.base_fit import check_fits
        from tiesmerge.export.model import base_shards

        base_shards(Path(base))
        check_fits(job.plan.modules, Path(base), "the merged adapter", fan_in_fan_out=job.plan.fan_in_fan_out,
                   resized=[k.removeprefix("base_model.model.").removesuffix(".base_layer.weight")
                            for k, _ in job.plan.passthrough])
    return ExportPlan(fmt, target, Path(base) if base is not None else None, force)


def run_plan(merged: Path, plan: ExportPlan, progress=None, log: Callable[[str], None] = _log):
    """The planned export of a finished merge, through the one dispatcher."""
    return export(merged, to=plan.format, output=plan.target, base=plan.base, force=plan.force, progress=progress,
                  log=log)


def describe_export(done) -> list[str]:
    """What an export wrote and the next command, as lines (the CLI prints them)."""
    kind = type(done).__name__
    if kind == "GgufExport":
        return [f"wrote {done.path}: {done.tensors} tensors, {done.arch}, rank {done.rank}, adapter.lora.alpha "
                f"{done.rank} (scale 1)",
                f"next: llama-cli -m BASE.gguf --lora {done.path}   (BASE.gguf: llama.cpp's convert_hf_to_gguf.py "
                f"of {done.base})"]
    if kind == "VllmExport":
        return [f"wrote {done.path}: {done.modules} modules at rank {done.rank}, lora_alpha {done.rank} (scale 1)",
                f"next: vllm serve BASE --enable-lora --max-lora-rank {done.rank} --lora-modules merged={done.path}"]
    return [f"wrote {done.path}: {done.shards} shard(s), ΔW folded into {done.folded} weights; load it like the base"]
