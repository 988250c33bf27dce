"""`tiesmerge export`: an adapter in the form a serving stack loads with the right scale."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tiesmerge.adapters import hub
from tiesmerge.cli.common import guarded
from tiesmerge.cli.recipe_flags import note
from tiesmerge.errors import BadInputError


@guarded
def export(
    ctx: typer.Context,
    adapter: str = typer.Argument(..., help="a PEFT LoRA adapter folder (e.g. a tiesmerge merge) or a Hub id "
                                 "org/name[@revision]"),
    to: str = typer.Option(..., "--to", help="vllm: uniform rank from vLLM's allowed set, scale folded in (what "
                           "vLLM reads right); gguf: a llama.cpp LoRA file (reads the base's config.json: --base, or the "
                           "adapter's base_model_name_or_path when that is a local folder); "
                           "model: the base with ΔW folded into its weights (needs --base)"),
    output: Path = typer.Option(..., "-o", "--output", help="output folder (--to gguf: the .gguf file)"),
    base: Optional[str] = typer.Option(None, "--base", help="the base model's local folder (or Hub id): --to model folds "
                                        "into its safetensors shards; --to gguf reads its config.json"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output folder"),
) -> None:
    """Export an adapter for a serving stack.

    Examples:

      tiesmerge export merged/ --to vllm -o merged-vllm/      (then: vllm serve BASE --enable-lora --max-lora-rank R …)

      tiesmerge export merged/ --to gguf --base /models/Qwen2.5-7B-Instruct -o merged-lora.gguf

      tiesmerge export merged/ --to model --base /models/Qwen2.5-7B-Instruct -o merged-model/
    """
    from tiesmerge.atomic import check_output_dir
    from tiesmerge.cli.progress import module_progress
    from tiesmerge.export.formats import ExportFormat

    fmt = ExportFormat.parse(to, "--to")
    adapter = hub.resolve(str(adapter), "adapter", log=note)
    base = hub.resolve(str(base), "--base", files=None, log=note) if base is not None else None
    if fmt is ExportFormat.gguf:
        from tiesmerge.export.gguf_lora import export_gguf

        done = export_gguf(adapter, base, output, force=force, log=lambda m: typer.echo(f"note: {m}", err=True))
        typer.echo(f"wrote {done.path}: {done.tensors} tensors, {done.arch}, rank {done.rank}, adapter.lora.alpha "
                   f"{done.rank} (scale 1)")
        typer.echo(f"next: llama-cli -m BASE.gguf --lora {done.path}   (BASE.gguf: llama.cpp's convert_hf_to_gguf.py "
                   f"of {done.base})")
        return
    check_output_dir(output, force)
    if fmt is ExportFormat.vllm:
        from tiesmerge.export.vllm import export_vllm

        with module_progress(1, "exporting", "modules") as hook:
            done = export_vllm(adapter, output, force=force, progress=hook)
        typer.echo(f"wrote {done.path}: {done.modules} modules at rank {done.rank}, lora_alpha {done.rank} (scale 1)")
        typer.echo(f"next: vllm serve BASE --enable-lora --max-lora-rank {done.rank} --lora-modules merged={done.path}")
        return
    if base is None:
        raise BadInputError("--to model needs --base, the base model's local folder")
    from tiesmerge.export.model import export_model

    with module_progress(1, "folding", "shards") as hook:
        done = export_model(adapter, base, output, force=force, progress=hook)
    typer.echo(f"wrote {done.path}: {done.shards} shard(s), ΔW folded into {done.folded} weights; load it like the base")
