"""`tiesmerge calibrate` (each adapter's input statistics, for regmean) and `tiesmerge refine` (distil the
specialists into a merged LoRA on their own unlabeled prompts). Thin: read → validate → call train/."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tiesmerge.cli.common import guarded, name_value_pairs
from tiesmerge.cli.recipe_flags import build_recipe, note
from tiesmerge.errors import BadInputError
from tiesmerge.merge.job import from_hub
from tiesmerge.merge.recipe import Recipe
from tiesmerge.train.calibration import DEFAULT_SIZE, PromptFormat, load_calibration

CAL_HELP = "NAME=FILE: adapter NAME's own unlabeled prompts (.jsonl/.json/.csv questions, .txt lines, or " \
           "builtin:DOMAIN:SPLIT); answers are never read. Repeat per adapter (or `calibration:` in the recipe)"


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def heldout_texts(test: Optional[Path]) -> list[str]:
    if test is None:
        return []
    from tiesmerge.train.calibration import read_prompts

    return [p.text for p in read_prompts(test, "--test file")]


def prompt_sets(spec: Recipe, flags: List[str], size: int, test: Optional[Path]):
    """adapter name → its budgeted prompts (flags override the recipe's `calibration:`), checked before loading."""
    sources = {a.name: a.calibration for a in spec.adapters if a.calibration}
    sources.update(name_value_pairs(flags, "--calibration"))
    return load_calibration(sources, [a.name for a in spec.adapters], size, heldout_texts(test),
                            f"--test {test}")


def protected_inputs(recipe: Optional[Path], spec: Recipe, flags: List[str], test: Optional[Path] = None,
                     base: Optional[str] = None, start: Optional[Path] = None) -> dict[str, Optional[Path]]:
    """Every file or folder a command reads — adapters, base, recipe, calibration and test files, statistics, the start
    merge — labelled for the overlap refusal (an output may not be, contain or lie inside any of them)."""
    out: dict[str, Optional[Path]] = {"the recipe": recipe, "the --test file": test, "the start merge": start}
    out |= {"the base model": Path(base) if base and Path(base).exists() else None}
    for a in spec.adapters:
        out[f"input adapter {a.name!r}"] = a.path
        out[f"the statistics of {a.name!r}"] = a.statistics
        if a.calibration and not str(a.calibration).startswith("builtin:"):
            out[f"the calibration file of {a.name!r}"] = Path(a.calibration)
    for name, value in name_value_pairs(flags, "--calibration").items():
        if not str(value).startswith("builtin:"):
            out[f"the calibration file of {name!r}"] = Path(value)
    return out


def with_cached_statistics(spec: Recipe, flags: List[str], size: int, fmt: PromptFormat, base: str | None = None,
                           device: str = "auto") -> Recipe:
    """The recipe with `statistics:` filled from the cache for adapters that have calibration prompts (merge). With a
    `base`, statistics not cached yet are collected first (calibrate's work, one command); without one they are refused
    with the command that makes them."""
    from tiesmerge.merge.registry import get as get_method
    from tiesmerge.train.statistics import cached_base, statistics_path

    if all(a.statistics is not None for a in spec.adapters):
        return spec
    prompts = prompt_sets(spec, flags, size, None)
    pp = get_method(spec.method).statistics.inputs == "merged"
    paths = {a.name: a.statistics or statistics_path(a.path, prompts[a.name], fmt) for a in spec.adapters}
    missing = [a.name for a in spec.adapters if a.statistics is None
               and not (Path(paths[a.name]).is_file() and (base is None or cached_base(paths[a.name]) == base))]
    todo = [a.name for a in spec.adapters if a.statistics is None]
    if pp and todo and base is not None:
        from tiesmerge.eval.models import load_base
        from tiesmerge.merge.methods.regmean import OFF_DIAGONAL

        model, tok = load_base(base, device=device)
        paths.update(pp_statistics(model, tok, base, spec, prompts, fmt, spec.parameters.get(OFF_DIAGONAL),
                                   spec.parameters.lam))
    elif todo and base is not None:  # calibrate's cache decides what is reused (same base, dtype, quantization)
        from tiesmerge.eval.models import load_base
        from tiesmerge.train.statistics import calibrate as collect

        if missing:
            _log(f"statistics of {', '.join(missing)} not cached: collecting them on {base}")
        model, tok = load_base(base, device=device)
        paths.update(collect(model, tok, base, {a.name: a.path for a in spec.adapters if a.name in todo},
                             {n: prompts[n] for n in todo}, fmt, log=_log))
    elif missing or pp:
        what = ("no RegMean++ statistics given" if pp else
                f"no statistics of adapter {missing[0]!r} for these prompts")
        raise BadInputError(f"{what}: give --base BASE to collect them in this command, or run `tiesmerge calibrate"
                            f"{' --pp' if pp else ''}` with the same adapters and --calibration first")
    adapters = [a.model_copy(update={"statistics": Path(paths[a.name])}) for a in spec.adapters]
    return spec.model_copy(update={"adapters": adapters})


def pp_statistics(model, tok, base, spec: Recipe, prompts, fmt, off_diagonal: float, lam: float):
    """RegMean++ statistics in the cache, keyed by everything they depend on."""
    from tiesmerge.cache import adapter_digest, cache_dir, cache_key
    from tiesmerge.train.calibration import prompts_digest
    from tiesmerge.train.regmean_pp import collect_pp
    from tiesmerge.train.statistics import collection_setup

    weights = {a.name: a.weight for a in spec.adapters}
    key = cache_key("regmean-pp", 2, base, collection_setup(model), off_diagonal, lam, weights,
                    [(a.name, adapter_digest(a.path), prompts_digest(prompts[a.name], fmt)) for a in spec.adapters])
    folder = cache_dir() / "statistics-pp" / key
    files = {a.name: folder / f"{a.name}.regmean_pp.safetensors" for a in spec.adapters}
    if all(f.is_file() for f in files.values()):
        _log(f"RegMean++ statistics cached ({folder})")
        return files
    return collect_pp(model, tok, base, {a.name: a.path for a in spec.adapters}, prompts, fmt,
                      {"off_diagonal": off_diagonal, "lambda": lam, "weights": weights}, folder, log=_log)


@guarded
def calibrate(
    ctx: typer.Context,
    recipe: Optional[Path] = typer.Argument(None, help="recipe YAML naming the adapters (and their `calibration:`)"),
    base: str = typer.Option(..., "--base", help="base model: a local folder, a hub id, or `smollm2` (embedded)"),
    adapter: List[str] = typer.Option([], "--adapter", help="NAME=PATH, repeat per adapter (instead of a recipe)"),
    calibration: List[str] = typer.Option([], "--calibration", help=CAL_HELP),
    size: int = typer.Option(DEFAULT_SIZE, "--calibration-size", help="prompts per adapter (a seeded sample above it)"),
    prompt_format: PromptFormat = typer.Option(PromptFormat.cloze, "--prompt-format", help="how a question is shown: "
                                               "cloze (`Question: …\\nAnswer:`) or letters (options, chat template)"),
    test: Optional[Path] = typer.Option(None, "--test", help="your evaluation's test questions: refuse prompts that "
                                        "leak them"),
    write_recipe: Optional[Path] = typer.Option(None, "--write-recipe", help="write the recipe with each adapter's "
                                                "`statistics:` filled in (method regmean unless the recipe names one)"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
    dtype: str = typer.Option("auto", "--dtype", help="the base's dtype: auto (fp32 on CPU, bf16 on CUDA), float32, "
                              "bfloat16, float16"),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="load the base in 4-bit NF4 (bitsandbytes), as QLoRA"),
    pp: bool = typer.Option(False, "--pp", help="RegMean++ statistics: block by block from the partially merged "
                            "model (for --method regmean_pp, with this --off-diagonal and --lambda)"),
    off_diagonal: float = typer.Option(1.0, "--off-diagonal", min=0.0, max=1.0, help="--pp: RegMean's a"),
    lam: float = typer.Option(1.0, "--lambda", help="--pp: the merge's λ"),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="accept adapters (and a --start) "
                                             "whose configs name different base models"),
) -> None:
    """Collect each adapter's input statistics (RegMean's Gram matrices) on its own prompts; cached, so merges with
    `--method regmean` run without the base afterwards.

    Example:

      tiesmerge calibrate --base smollm2 --adapter math=./math --calibration math=builtin:math:train \\
        --adapter code=./code --calibration code=builtin:code:train

      tiesmerge merge --method regmean --adapter math=./math --adapter code=./code \\
        --calibration math=builtin:math:train --calibration code=builtin:code:train --rank 32 -o merged/
    """
    from tiesmerge.adapters.compat import plan_set
    from tiesmerge.adapters.reader import AdapterReader
    from tiesmerge.eval.models import load_base
    from tiesmerge.train.statistics import calibrate as collect

    spec = from_hub(build_recipe(recipe, adapter, {("allow_base_mismatch",): True if allow_base_mismatch else None}),
                    note)
    plan_set([AdapterReader(a.path, a.name) for a in spec.adapters], spec.base_model, spec.allow_base_mismatch)
    prompts = prompt_sets(spec, calibration, size, test)
    if write_recipe is not None:  # checked before any statistics are computed
        from tiesmerge.atomic import check_output_file

        write_recipe = check_output_file(write_recipe, "--write-recipe",
                                         protected_inputs(recipe, spec, calibration, test, base))
    if pp:  # the same checks as a recipe's parameters: finite, in range
        from tiesmerge.merge.methods.regmean import OFF_DIAGONAL
        from tiesmerge.merge.params import LAMBDA

        for definition, value, flag in ((LAMBDA, lam, "--lambda"), (OFF_DIAGONAL, off_diagonal, "--off-diagonal")):
            try:
                definition.check(value)
            except ValueError as exc:
                raise BadInputError(f"{flag} {value}: {exc}") from None
        if lam == 0:
            raise BadInputError("--lambda 0: the merged ΔW would be 0 in every block; set --lambda (1 is the usual "
                                "value)")
    if pp and load_in_4bit:
        raise BadInputError("--pp folds each merged block into the base's weights: it needs an unquantized base "
                            "(drop --4bit)")
    model, tok = load_base(base, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    adapters = {a.name: a.path for a in spec.adapters}
    if pp:
        files = pp_statistics(model, tok, base, spec, prompts, prompt_format, off_diagonal, lam)
    else:
        files = collect(model, tok, base, adapters, prompts, prompt_format, log=_log)
    for name, path in files.items():
        typer.echo(f"{name}: {path}")
    if write_recipe is not None:
        import yaml

        data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        if pp:
            data["method"], data["parameters"] = "regmean_pp", {"off_diagonal": off_diagonal, "lambda": lam}
        elif "method" not in spec.model_fields_set:
            data["method"], data["parameters"] = "regmean", {}
        from tiesmerge.atomic import refuse_overlap, write_file

        for entry in data["adapters"]:
            entry["statistics"] = str(files[entry["name"]])
        refuse_overlap(write_recipe, {f"the statistics of {n!r}": p for n, p in files.items()},
                       "give --write-recipe a new file name")
        write_file(write_recipe, yaml.safe_dump(data, sort_keys=False))
        typer.echo(f"recipe with statistics: {write_recipe}")


@guarded
def refine(
    ctx: typer.Context,
    recipe: Optional[Path] = typer.Argument(None, help="recipe YAML naming the specialists (and `calibration:`)"),
    output: Path = typer.Option(..., "-o", "--output", help="the refined adapter's directory"),
    base: str = typer.Option(..., "--base", help="base model: a local folder, a hub id, or `smollm2` (embedded)"),
    start: Optional[Path] = typer.Option(None, "--start", help="the merged adapter to refine (any merge's output); "
                                         "default: the recipe merged as written (Iso-C, core space, rank Σ r when "
                                         "adapters come from --adapter)"),
    adapter: List[str] = typer.Option([], "--adapter", help="NAME=PATH, the specialists (instead of a recipe)"),
    calibration: List[str] = typer.Option([], "--calibration", help=CAL_HELP),
    size: int = typer.Option(DEFAULT_SIZE, "--calibration-size", help="prompts per adapter (a seeded sample above it)"),
    prompt_format: PromptFormat = typer.Option(PromptFormat.cloze, "--prompt-format", help="how a question is shown: "
                                               "cloze (`Question: …\\nAnswer:`) or letters (options, chat template)"),
    steps: int = typer.Option(150, "--steps", help="step budget (optimizer steps)"),
    batch_size: int = typer.Option(16, "--batch-size", help="prompts per step, the adapters in turn"),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate"),
    tokens: int = typer.Option(6, "--tokens", help="length of each teacher continuation that is matched"),
    target: str = typer.Option("greedy", "--target", help="greedy (cross-entropy on the teacher's greedy "
                               "continuation) or kl (KL to the teacher's distribution at those positions)"),
    heldout: float = typer.Option(0.1, "--heldout", help="share of each adapter's prompts held out for early "
                                  "stopping and the agreement report"),
    eval_every: int = typer.Option(25, "--eval-every", help="steps between held-out evaluations (and checkpoints)"),
    patience: int = typer.Option(3, "--patience", help="evaluations without a better held-out loss before stopping"),
    seed: int = typer.Option(0, "--seed", help="seed of the held-out split and the batch order"),
    test: Optional[Path] = typer.Option(None, "--test", help="your evaluation's test questions: refuse prompts that "
                                        "leak them"),
    restart: bool = typer.Option(False, "--restart", help="ignore a checkpoint of an interrupted run"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output directory"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
    dtype: str = typer.Option("auto", "--dtype", help="the base's dtype: auto (fp32 on CPU, bf16 on CUDA), float32, "
                              "bfloat16, float16"),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="load the base in 4-bit NF4 (bitsandbytes): QLoRA-style, "
                                      "for 72B on one GPU"),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="accept adapters (and a --start) "
                                             "whose configs name different base models"),
) -> None:
    """Refine a merged LoRA: train it to reproduce each specialist on that specialist's own unlabeled prompts.
    The output is a plain PEFT LoRA of the start's rank and targets, scale 1; refine_report.json says per adapter
    how closely the student follows its teacher on held-out prompts. An interrupted run resumes from its checkpoint.

    Example:

      tiesmerge merge --method iso_c --space core --adapter math=./math --adapter code=./code --rank 32 -o merged/

      tiesmerge refine --start merged/ --base smollm2 --adapter math=./math --adapter code=./code \\
        --calibration math=builtin:math:train --calibration code=builtin:code:train -o refined/
    """
    from tiesmerge.atomic import check_output_dir, refuse_overlap
    from tiesmerge.train.refine import RefineSettings, RefineTarget
    from tiesmerge.train.refine_job import run_refine

    settings = RefineSettings(steps=steps, batch_size=batch_size, lr=lr, tokens=tokens,
                              target=RefineTarget.parse(target, "--target"), prompt_format=prompt_format,
                              heldout=heldout, eval_every=eval_every, patience=patience, seed=seed)
    settings.check()
    overrides = {} if recipe is not None else {("method",): "iso_c", ("space",): "core", ("output", "rank"): "full"}
    overrides[("allow_base_mismatch",)] = True if allow_base_mismatch else None
    spec = from_hub(build_recipe(recipe, adapter, overrides), note)
    prompts = prompt_sets(spec, calibration, size, test)
    if start is not None and not (start / "adapter_config.json").is_file():
        raise BadInputError(f"--start {start}: no adapter_config.json (give a merged adapter's folder)")
    from tiesmerge.adapters.compat import check_base
    from tiesmerge.adapters.reader import AdapterReader

    readers = [AdapterReader(a.path, a.name) for a in spec.adapters]  # the start on the specialists' base, as merge
    check_base(readers + ([AdapterReader(start, "--start")] if start is not None else []), spec.base_model,
               spec.allow_base_mismatch)
    out = check_output_dir(output, force)
    refuse_overlap(out, protected_inputs(recipe, spec, calibration, test, base, start),
                   "write the refined adapter elsewhere")
    result = run_refine(spec, prompts, settings, base=base, start=start, output=out, force=force, restart=restart,
                        device=device, dtype=dtype, load_in_4bit=load_in_4bit, log=_log,
                        command=" ".join(["tiesmerge", *sys.argv[1:]]))
    for line in result["lines"]:
        typer.echo(line)
    typer.echo(f"refined adapter: {output} ({result['report']['steps_run']} steps, best at step "
               f"{result['report']['best_step']}, stopped: {result['report']['stopped']}, "
               f"{result['report']['seconds']:.0f} s)")
    json.dumps(result["report"])  # the report is plain JSON (written beside the adapter)
