"""`tiesmerge deploy`: flags → tiesmerge.deploy (the tournament work directory) → print."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from tiesmerge import api
from tiesmerge.cli.common import guarded


@guarded
def deploy(
    ctx: typer.Context,
    merged: str = typer.Argument(..., help="the merged PEFT adapter folder (from `tiesmerge merge`) or a Hub id "
                                "org/name[@revision]"),
    base: str = typer.Option(..., "--base", help="the base the adapter was merged for: a local model folder, "
                             "a hub id (e.g. Qwen/Qwen2.5-72B-Instruct) or `smollm2`"),
    to: Path = typer.Option(..., "--to", help="the tournament work directory (created if missing)"),
    load_in_4bit: Optional[bool] = typer.Option(None, "--load-in-4bit/--no-load-in-4bit",
                                                help="NF4 4-bit base via bitsandbytes (default: on with CUDA, "
                                                "off on CPU)"),
    link: bool = typer.Option(False, "--link", help="link the adapter folder instead of copying it"),
    force: bool = typer.Option(False, "--force", help="replace an earlier deployment in --to (outputs/ is kept)"),
    fold: bool = typer.Option(False, "--fold", help="write DIR/model/: the base with the adapter folded in (a local "
                              "base folder only); the agents then load one model and no adapter — a faster start. "
                              "On a 4-bit base this quantizes W + ΔW instead of running the LoRA beside NF4(W): "
                              "see docs/agents.md for what that costs in accuracy"),
    bank_size: int = typer.Option(60, "--bank-size", min=1, help="verified fallback questions per built-in domain "
                                  "written to DIR/fallback_bank.json"),
) -> None:
    """Write a self-contained tournament work directory: DIR/agents/ (the four entry files and runtime/, which
    imports only torch, transformers, peft, bitsandbytes and pyyaml — tiesmerge is not needed where the agents run;
    tested with transformers 4.46.3 / peft 0.17.1 / bitsandbytes 0.45.0 and today's releases), DIR/agents.yaml,
    DIR/fallback_bank.json (verified fallback questions), DIR/adapter/ (or DIR/model/ with --fold) and DIR/outputs/.

    Then, in DIR, exactly as the tournament runs them:

      python -m agents.answer_agent --input_file outputs/filtered_questions.json --output_file outputs/answers.json --verbose

      python -m agents.question_agent --output_file outputs/questions.json --num_questions 20 --verbose

    Questions are answered and drafted in batches (answer.batch_size, question.batch_size; 20 each); every item of
    a batch is final within its deadline (5.5 s per answer, 9 s per question) of the batch's start. Deadlines,
    batch sizes and generation settings live in agents.yaml; an agen.yaml
    or qgen.yaml in DIR overrides max_tokens, temperature, top_p and repetition_penalty.

    Example: tiesmerge deploy merged/ --base Qwen/Qwen2.5-72B-Instruct --to ~/AIAC --load-in-4bit
    """
    from tiesmerge.cli.progress import module_progress
    from tiesmerge.cli.recipe_flags import note

    with module_progress(1, "folding", "shards") if fold else contextlib.nullcontext(None) as hook:
        done = api.deploy(merged, base=base, to=to, load_in_4bit=load_in_4bit, link=link, force=force, fold=fold,
                          bank_size=bank_size, progress=hook, log=note)
    what = (f"{done.model.name}/ (base + adapter folded)" if done.model else
            f"{done.adapter.name}/ ({'linked' if done.linked else 'copied'})")
    typer.echo(f"deployed to {done.root}: agents/ (self-contained), agents.yaml, fallback_bank.json "
               f"({done.bank_questions} verified questions), {what}, outputs/")
    typer.echo(f"next: cd {done.root} && python -m agents.question_agent --output_file outputs/questions.json "
               "--num_questions 20 --verbose")
