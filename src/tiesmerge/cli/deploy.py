"""`tiesmerge deploy`: parse → validate → write the tournament work directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tiesmerge.cli.common import guarded
from tiesmerge.extras import Extra, require


@guarded
def deploy(
    ctx: typer.Context,
    merged: Path = typer.Argument(..., help="the merged PEFT adapter folder (from `tiesmerge merge`)"),
    base: str = typer.Option(..., "--base", help="the base the adapter was merged for: a local model folder, "
                             "a hub id (e.g. Qwen/Qwen2.5-72B-Instruct) or `smollm2`"),
    to: Path = typer.Option(..., "--to", help="the tournament work directory (created if missing)"),
    load_in_4bit: Optional[bool] = typer.Option(None, "--load-in-4bit/--no-load-in-4bit",
                                                help="NF4 4-bit base via bitsandbytes (default: on with CUDA, "
                                                "off on CPU)"),
    link: bool = typer.Option(False, "--link", help="link the adapter folder instead of copying it"),
    force: bool = typer.Option(False, "--force", help="replace an earlier deployment in --to (outputs/ is kept)"),
) -> None:
    """Write DIR/agents/{question,answer}_{agent,model}.py, DIR/agents.yaml, DIR/adapter/ and DIR/outputs/.

    Then, in DIR, exactly as the tournament runs them:

      python -m agents.answer_agent --input_file outputs/filtered_questions.json --output_file outputs/answers.json --verbose

      python -m agents.question_agent --output_file outputs/questions.json --num_questions 20 --verbose

    Deadlines (5.5 s per answer, 9 s per question) and generation settings live in agents.yaml; an agen.yaml
    or qgen.yaml in DIR overrides max_tokens, temperature, top_p and repetition_penalty.

    Example: tiesmerge deploy merged/ --base Qwen/Qwen2.5-72B-Instruct --to ~/AIAC --load-in-4bit
    """
    require(Extra.agents, "tiesmerge deploy")
    from tiesmerge.agents.deploy import deploy as run_deploy

    done = run_deploy(merged, base, to, load_in_4bit=load_in_4bit, link=link, force=force)
    typer.echo(f"deployed to {done.root}: agents/, agents.yaml, {done.adapter.name}/ "
               f"({'linked' if done.linked else 'copied'}), outputs/")
    typer.echo(f"next: cd {done.root} && python -m agents.question_agent --output_file outputs/questions.json "
               "--num_questions 20 --verbose")
