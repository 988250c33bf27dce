"""`tiesmerge export`: an adapter in the form a serving stack loads with the right scale (flags → tiesmerge.export)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tiesmerge import api
from tiesmerge.api.exporting import describe_export
from tiesmerge.cli.common import guarded
from tiesmerge.cli.recipe_flags import note


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
    from tiesmerge.cli.progress import module_progress

    label, unit = ("folding", "shards") if str(to).strip().lower() == "model" else ("exporting", "modules")
    with module_progress(1, label, unit) as hook:
        done = api.export(adapter, to=to, output=output, base=base, force=force, progress=hook, log=note)
    for line in describe_export(done):
        typer.echo(line)
