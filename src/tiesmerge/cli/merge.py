"""`tiesmerge merge` and `tiesmerge validate`: read a recipe (or flags) → tiesmerge.api.plan_merge / merge → print."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tiesmerge import api
from tiesmerge.api.exporting import describe_export
from tiesmerge.api.types import DENSITY, LAMBDA, SEED, SIGN, AdapterEntry, Method, OutputSpec, Recipe, SignRule, Space
from tiesmerge.cli.common import field_help, guarded, name_value_pairs
from tiesmerge.cli.progress import module_progress
from tiesmerge.cli.recipe_flags import adapters_from_flags, note, rank_value
from tiesmerge.devices import resolve_device
from tiesmerge.errors import BadInputError

O, A, R = OutputSpec, AdapterEntry, Recipe


def print_summary(result: api.MergeResult, console: Console) -> None:
    s = result.summary
    table = Table(title=f"merge report — {result.output}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def pct(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    table.add_row("modules", str(s["modules"]))
    table.add_row("rank", f"{s['rank_min']}–{s['rank_max']} (mean {s['rank_mean']:.1f})")
    if s["worst_module"] is not None:
        table.add_row("retained energy", f"mean {pct(s['retained_energy_mean'])}, min {pct(s['retained_energy_min'])} "
                                         f"({s['worst_module']})")
    if s["zero_modules"]:
        table.add_row("ΔW = 0", f"{s['zero_modules']} of {s['modules']} modules")
    table.add_row("relative Frobenius error", f"mean {s['rel_frobenius_error_mean']:.4f}, max {s['rel_frobenius_error_max']:.4f}")
    table.add_row("sign-conflict rate", pct(s["sign_conflict_rate_mean"]))
    table.add_row("kept density (trim)", pct(s["kept_density_mean"]))
    table.add_row("output parameters", f"{s['output_parameters']:,}")
    table.add_row("wall time", f"{result.seconds:.1f} s")
    table.add_row("files", "adapter_config.json, adapter_model.safetensors, README.md, merge_report.json")
    console.print(table)


@guarded
def merge(
    ctx: typer.Context,
    recipe: Optional[Path] = typer.Argument(None, help="recipe YAML (see the README); omit to build one from flags"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="output adapter directory"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output directory"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (CUDA when visible)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check everything and print the plan; write nothing"),
    adapter: List[str] = typer.Option([], "--adapter", help="NAME=PATH[:WEIGHT], repeat per adapter (instead of a recipe)"),
    method: Optional[Method] = typer.Option(None, "--method", help=field_help(R, "method")),
    space: Optional[Space] = typer.Option(None, "--space", help=field_help(R, "space")),
    density: Optional[float] = typer.Option(None, "--density", help=DENSITY.help),
    trim: Optional[float] = typer.Option(None, "--trim", help="share of smallest entries dropped (density = 1 - trim)"),
    lam: Optional[float] = typer.Option(None, "--lambda", help=LAMBDA.help),
    sign: Optional[SignRule] = typer.Option(None, "--sign", help=SIGN.help),
    seed: Optional[int] = typer.Option(None, "--seed", help=SEED.help),
    rank: Optional[str] = typer.Option(None, "--rank", help=field_help(O, "rank")),
    energy: Optional[float] = typer.Option(None, "--energy", help=field_help(O, "energy")),
    max_rank: Optional[int] = typer.Option(None, "--max-rank", help=field_help(O, "max_rank")),
    dtype: Optional[str] = typer.Option(None, "--dtype", help=field_help(O, "dtype")),
    base_model: Optional[str] = typer.Option(None, "--base-model", help=field_help(R, "base_model")),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help=field_help(R, "allow_base_mismatch")),
    export: Optional[str] = typer.Option(None, "--export", help="also export the merge: vllm (to OUT-vllm/), gguf "
                                         "(to OUT.gguf) or model (to OUT-model/); gguf and model need --export-base"),
    export_base: Optional[str] = typer.Option(None, "--export-base", help="the base model's local folder (or Hub id), for "
                                               "--export gguf / model"),
    calibration: List[str] = typer.Option([], "--calibration", help="NAME=FILE, calibrated methods (regmean): the "
                                          "prompts whose statistics `tiesmerge calibrate` cached"),
    calibration_size: int = typer.Option(256, "--calibration-size", help="as given to `tiesmerge calibrate`"),
    prompt_format: str = typer.Option("cloze", "--prompt-format", help="as given to `tiesmerge calibrate`"),
    base: Optional[str] = typer.Option(None, "--base", help="calibrated methods: the base model (a local folder, a "
                                       "hub id, or `smollm2`); statistics not cached yet are collected on it first, "
                                       "as `tiesmerge calibrate` would"),
) -> None:
    """Merge PEFT LoRA / RSLoRA adapters into one adapter (ΔW-space TIES by default).

    Examples:

      tiesmerge merge recipe.yaml -o merged/

      tiesmerge merge --adapter math=./math:0.5 --adapter code=./code:0.5 --density 0.2 --rank 64 -o merged/

      tiesmerge merge --method regmean --base smollm2 --adapter math=./math --calibration math=math.jsonl \\
        --adapter code=./code --calibration code=code.jsonl -o merged/
    """
    plan = api.plan_merge(
        recipe, adapters=adapters_from_flags(recipe, adapter), method=method, space=space,
        parameters={"density": density, "trim": trim, "lambda": lam, "sign": sign, "seed": seed},
        output={"rank": rank_value(rank) if rank is not None else None, "energy": energy, "max_rank": max_rank,
                "dtype": dtype},
        base_model=base_model, allow_base_mismatch=allow_base_mismatch or None,
        calibration=name_value_pairs(calibration, "--calibration"), calibration_size=calibration_size,
        prompt_format=prompt_format, base=base, device=device, log=note)
    for line in [n.replace("energy", "--energy").replace("max_rank", "--max-rank") if recipe is None else n
                 for n in plan.notes]:
        typer.echo(f"note: {line}", err=True)
    if output is None and not dry_run:
        raise BadInputError("no output directory; pass -o DIR (or --dry-run to only check)")
    for line in plan.warnings:
        typer.echo(f"warning: {line}", err=True)
    out = Console()
    if dry_run:
        for line in plan.lines:
            out.print(line, soft_wrap=True)
        out.print(f"device: {resolve_device(device)}; dry run: nothing written", soft_wrap=True)
        return
    with module_progress(len(plan.job.plan.modules)) as hook:
        result = api.merge(plan, output=output, export=export, export_base=export_base, force=force, device=device,
                           progress=hook, log=note, command=shlex.join(["tiesmerge", *sys.argv[1:]]))
    print_summary(result, out)
    if result.export is not None:
        for line in describe_export(result.export):
            typer.echo(line)
    written = json.loads((result.output / "adapter_config.json").read_text())
    if written.get("rank_pattern"):
        typer.echo(f"warning: the output's modules have different ranks (rank_pattern); vLLM and llama.cpp ignore "
                   f"rank_pattern / alpha_pattern and would scale them wrongly: serve it through "
                   f"`tiesmerge export {result.output} --to vllm -o …` (or merge with an int --rank)", err=True)
    if result.summary.get("zero_modules") == result.summary["modules"]:
        typer.echo("warning: the merged ΔW is 0 in every module: the inputs carry no update "
                   "(all-zero lora_B — untrained adapters?) or the trim and sign election cancelled everything", err=True)


@guarded
def validate(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="recipe YAML to check"),
) -> None:
    """Check a recipe without merging: its keys and values, the adapters it names, and the set's compatibility."""
    plan = api.validate(recipe)
    for line in plan.warnings:
        typer.echo(f"warning: {line}", err=True)
    out = Console()
    out.print(f"[green]ok[/green]: {recipe} is a valid recipe", soft_wrap=True)
    for line in plan.plan:
        out.print(line, soft_wrap=True, markup=False)
