"""`tiesmerge merge` and `tiesmerge validate`: read a recipe (or flags) → validate → call the driver."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tiesmerge.cli.common import field_help, guarded
from tiesmerge.cli.progress import module_progress
from tiesmerge.cli.recipe_flags import build_recipe, note, rank_value
from tiesmerge.devices import resolve_device
from tiesmerge.errors import BadInputError
from tiesmerge.merge import driver
from tiesmerge.merge.job import describe, prepare
from tiesmerge.merge.params import DENSITY, LAMBDA, SEED, SIGN
from tiesmerge.merge.recipe import AdapterEntry, OutputSpec, Recipe
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.types import Method, SignRule, Space

O, A, R = OutputSpec, AdapterEntry, Recipe


def print_summary(result: driver.MergeResult, console: Console) -> None:
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


def plan_export(export: str, base: Optional[Path], output: Optional[Path], force: bool, job):
    """(format, target, base) of `merge --export`, checked before the merge runs: the output path, the base folder
    and that the merged modules fit the base's weights."""
    from tiesmerge.adapters.base_fit import check_fits
    from tiesmerge.atomic import check_output_dir, refuse_overlap
    from tiesmerge.export.formats import ExportFormat

    fmt = ExportFormat.parse(export, "--export")
    if output is None:
        raise BadInputError("--export needs -o DIR for the merged adapter")
    named = job.plan.base_model
    if fmt is not ExportFormat.vllm and base is None:
        if named and Path(named).expanduser().is_dir() and (Path(named).expanduser() / "config.json").is_file():
            base = Path(named).expanduser()
            typer.echo(f"note: --export {fmt.value} uses the adapters' base_model_name_or_path {named} "
                       "(pass --export-base to override)", err=True)
        else:
            raise BadInputError(f"--export {fmt.value} needs --export-base, the base model's local folder "
                                f"(the adapters' base_model_name_or_path {named!r} is not a local model folder)")
    target = Path(f"{output}.gguf") if fmt is ExportFormat.gguf else Path(f"{output}-{fmt.value}")
    inputs = {f"input adapter {r.name!r}": r.path for r in job.readers} | {"the base model": base}
    refuse_overlap(target, inputs, "choose another -o")
    if fmt is ExportFormat.gguf:
        from tiesmerge.export.gguf_lora import base_config

        base_config(base)
        if target.exists() and not force:
            raise BadInputError(f"output {target} exists; pass --force to replace it")
    else:
        check_output_dir(target, force)
    if fmt is ExportFormat.model:
        from tiesmerge.export.model import base_shards

        base_shards(Path(base))
        check_fits(job.plan.modules, Path(base), "the merged adapter", fan_in_fan_out=job.plan.fan_in_fan_out,
                   resized=[k.removeprefix("base_model.model.").removesuffix(".base_layer.weight")
                            for k, _ in job.plan.passthrough])
    return fmt, target, base, force


def run_export(merged: Path, fmt, target: Path, base: Optional[Path], force: bool) -> None:
    from tiesmerge.export.formats import ExportFormat

    if fmt is ExportFormat.vllm:
        from tiesmerge.export.vllm import export_vllm

        done = export_vllm(merged, target, force=force)
        typer.echo(f"exported for vLLM: {done.path} (--max-lora-rank {done.rank})")
    elif fmt is ExportFormat.gguf:
        from tiesmerge.export.gguf_lora import export_gguf

        done = export_gguf(merged, base, target, force=force)
        typer.echo(f"exported for llama.cpp: {done.path} (rank {done.rank}, alpha {done.rank})")
    else:
        from tiesmerge.export.model import export_model

        done = export_model(merged, base, target, force=force)
        typer.echo(f"exported a full model: {done.path} ({done.folded} weights folded)")


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
    overrides = {
        ("method",): method.value if method else None,
        ("space",): space.value if space else None,
        ("parameters", "density"): density,
        ("parameters", "trim"): trim,
        ("parameters", "lambda"): lam,
        ("parameters", "sign"): sign.value if sign else None,
        ("parameters", "seed"): seed,
        ("output", "rank"): rank_value(rank) if rank is not None else None,
        ("output", "energy"): energy,
        ("output", "max_rank"): max_rank,
        ("output", "dtype"): dtype,
        ("base_model",): base_model,
        ("allow_base_mismatch",): True if allow_base_mismatch else None,
    }
    notes: list[str] = []
    spec = build_recipe(recipe, adapter, overrides, notes)
    notes += [n.replace("energy", "--energy").replace("max_rank", "--max-rank") if recipe is None else n
              for n in spec.output.unused()]
    for line in notes:
        typer.echo(f"note: {line}", err=True)
    if get_method(spec.method).statistics is not None:
        from tiesmerge.cli.calibrate import with_cached_statistics
        from tiesmerge.train.calibration import PromptFormat

        spec = with_cached_statistics(spec, calibration, calibration_size,
                                      PromptFormat.parse(prompt_format, "--prompt-format"), base=base,
                                      device=device)
    elif calibration or base is not None:
        raise BadInputError(f"--calibration and --base apply to calibrated methods (regmean, regmean_pp), not "
                            f"{spec.method.value}")
    dev = resolve_device(device)
    if output is None and not dry_run:
        raise BadInputError("no output directory; pass -o DIR (or --dry-run to only check)")
    job = prepare(spec, log=note)
    if export_base is not None:
        from tiesmerge.adapters import hub

        export_base = hub.resolve(str(export_base), "--export-base", files=None, log=note)
    export_plan = plan_export(export, export_base, output, force, job) if export and not dry_run else None
    for line in job.warnings:
        typer.echo(f"warning: {line}", err=True)
    out = Console()
    if dry_run:
        for line in describe(job):
            out.print(line, soft_wrap=True)
        out.print(f"device: {dev}; dry run: nothing written", soft_wrap=True)
        return
    from tiesmerge.atomic import check_output_dir, refuse_overlap
    from tiesmerge.cli.calibrate import protected_inputs

    check_output_dir(output, force)  # the folder's own checks first (the current folder, a file, permissions)
    refuse_overlap(output, protected_inputs(recipe, spec, calibration, None, base),
                   "write the merge to a separate directory")
    with module_progress(len(job.plan.modules)) as hook:
        result = driver.run(job, output, force=force, device=dev, progress=hook,
                            command=shlex.join(["tiesmerge", *sys.argv[1:]]))
    print_summary(result, out)
    if export_plan is not None:
        run_export(result.output, *export_plan)
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
    spec = build_recipe(recipe, [], {})
    job = prepare(spec, log=note)
    for line in job.warnings:
        typer.echo(f"warning: {line}", err=True)
    out = Console()
    out.print(f"[green]ok[/green]: {recipe} is a valid recipe", soft_wrap=True)
    for line in describe(job):
        out.print(line, soft_wrap=True, markup=False)
