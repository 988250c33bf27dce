"""`tiesmerge calibrate` (each adapter's input statistics, for regmean) and `tiesmerge refine` (distil the
specialists into a merged LoRA on their own unlabeled prompts). Thin: flags → tiesmerge.api → print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from tiesmerge import api
from tiesmerge.api.types import DEFAULT_SIZE, PromptFormat, RefineSettings
from tiesmerge.cli.common import guarded, name_value_pairs
from tiesmerge.cli.recipe_flags import adapters_from_flags

_R = RefineSettings()  # refine's flags default to the library's settings (one place for each default)
CAL_HELP = "NAME=FILE: adapter NAME's own unlabeled prompts (.jsonl/.json/.csv questions, .txt lines, or " \
           "builtin:DOMAIN:SPLIT); answers are never read. Repeat per adapter (or `calibration:` in the recipe)"


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


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
    done = api.calibrate(recipe, base=base, adapters=adapters_from_flags(recipe, adapter),
                         calibration=name_value_pairs(calibration, "--calibration"), size=size,
                         prompt_format=prompt_format, test=test, write_recipe=write_recipe, device=device, dtype=dtype,
                         load_in_4bit=load_in_4bit, pp=pp, off_diagonal=off_diagonal, lam=lam,
                         allow_base_mismatch=allow_base_mismatch, log=_log)
    for name, path in done.files.items():
        typer.echo(f"{name}: {path}")
    if done.recipe is not None:
        typer.echo(f"recipe with statistics: {done.recipe}")


@guarded
def refine(
    ctx: typer.Context,
    recipe: Optional[Path] = typer.Argument(None, help="recipe YAML naming the specialists (and `calibration:`)"),
    output: Path = typer.Option(..., "-o", "--output", help="the refined adapter's directory"),
    base: str = typer.Option(..., "--base", help="base model: a local folder, a hub id, or `smollm2` (embedded)"),
    start: List[Path] = typer.Option([], "--start", help="the merged adapter to refine (any merge's output); "
                                     "repeat it to give candidates (say your TIES, task-arithmetic and Iso-C merges): "
                                     "the one closest to its teachers on the held-out prompts is refined. Default: "
                                     "the recipe merged as written (Iso-C, core space, rank Σ r when adapters come "
                                     "from --adapter)"),
    adapter: List[str] = typer.Option([], "--adapter", help="NAME=PATH, the specialists (instead of a recipe)"),
    calibration: List[str] = typer.Option([], "--calibration", help=CAL_HELP),
    size: int = typer.Option(DEFAULT_SIZE, "--calibration-size", help="prompts per adapter (a seeded sample above it)"),
    prompt_format: PromptFormat = typer.Option(PromptFormat.cloze, "--prompt-format", help="how a question is shown: "
                                               "cloze (`Question: …\\nAnswer:`) or letters (options, chat template)"),
    steps: int = typer.Option(_R.steps, "--steps", help="step budget (optimizer steps)"),
    batch_size: int = typer.Option(_R.batch_size, "--batch-size", help="prompts per step, the adapters in turn"),
    lr: float = typer.Option(_R.lr, "--lr", help="AdamW learning rate"),
    tokens: int = typer.Option(_R.tokens, "--tokens", help="length of each teacher continuation that is matched"),
    target: str = typer.Option(_R.target.value, "--target", help="greedy (cross-entropy on the teacher's greedy "
                               "continuation), kl (KL to the teacher's distribution at those positions), kl_all "
                               "(KL at every position, the prompt's too) or options (KL at every token of each of a "
                               "question's four options, teacher-forced after the cloze prompt; answers never read); "
                               "teacher outputs are computed once"),
    keep: bool = typer.Option(_R.keep, "--keep/--no-keep", help="a prompt the start already continues as its teacher "
                              "does is distilled toward the start itself (keeps what the start does well)"),
    normalize: bool = typer.Option(_R.normalize, "--normalize/--no-normalize", help="divide each teacher's loss by the "
                                   "start's held-out loss on it, so no teacher drowns the others"),
    autocast: bool = typer.Option(_R.autocast, "--autocast/--no-autocast", help="bfloat16 forward passes (AVX-512 BF16 "
                                  "CPUs, CUDA); factors and optimizer stay float32. 1.3–1.7× faster here but "
                                  "3–7 points worse on the skills suite"),
    validation: List[str] = typer.Option([], "--validation", help="NAME=FILE: labelled questions you hold back "
                                         "for adapter NAME's domain (or builtin:DOMAIN:validation): the state with "
                                         "the best validation accuracy is kept — the start if none beats it"),
    heldout: float = typer.Option(_R.heldout, "--heldout", help="share of each adapter's prompts held out for early "
                                  "stopping and the agreement report"),
    eval_every: int = typer.Option(_R.eval_every, "--eval-every", help="steps between held-out evaluations (and checkpoints)"),
    patience: int = typer.Option(_R.patience, "--patience", help="evaluations without a better held-out loss before stopping"),
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

      tiesmerge refine --start ties/ --start ta/ --start iso_c/ …   (refines the closest of the three)
    """
    done = api.refine(recipe, output=output, base=base, start=start or None,
                      adapters=adapters_from_flags(recipe, adapter),
                      calibration=name_value_pairs(calibration, "--calibration"), size=size, test=test,
                      restart=restart, force=force, device=device, dtype=dtype, load_in_4bit=load_in_4bit,
                      allow_base_mismatch=allow_base_mismatch, log=_log,
                      validation=name_value_pairs(validation, "--validation"), keep=keep, normalize=normalize,
                      autocast=autocast,
                      command=" ".join(["tiesmerge", *sys.argv[1:]]), steps=steps, batch_size=batch_size, lr=lr,
                      tokens=tokens, target=target, prompt_format=prompt_format, heldout=heldout,
                      eval_every=eval_every, patience=patience, seed=seed)
    for line in done.lines:
        typer.echo(line)
    r = done.report
    typer.echo(f"refined adapter: {done.output} ({r['steps_run']} steps, best at step {r['best_step']}, stopped: "
               f"{r['stopped']}, {r['seconds']:.0f} s)")
