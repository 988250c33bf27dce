"""`tiesmerge data`: build the built-in verified question sets as JSONL files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from tiesmerge import api
from tiesmerge.cli.common import data_args, guarded

app = typer.Typer(help="Built-in question sets (math, code, stem, humanities).", no_args_is_help=True)


@app.command("build")
@guarded
def build_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="directory for {split}/{domain}.jsonl and manifest.json"),
    n_per_domain: int = typer.Option(1000, "--n-per-domain", min=20, help="questions per domain, split 70/10/20 "
                                     "into train / validation / test"),
    seed: int = typer.Option(0, "--seed", help="generation seed"),
    test_per_domain: Optional[int] = typer.Option(
        None, "--test-per-domain", min=1, help="a strictly held-out test split of N per domain instead of the 20 %: "
        "no test question shares a fact (question + correct answer) with train or validation, which stay as "
        "built — so adapters trained on a build with the same --n-per-domain and --seed have seen none of them"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty directory"),
) -> None:
    """Generate the question sets deterministically; every answer is computed, run or looked up by an oracle."""
    manifest = api.build_data(out, n_per_domain=n_per_domain, seed=seed, test_per_domain=test_per_domain, force=force)
    console = Console(soft_wrap=True)
    for split, counts in manifest["splits"].items():
        console.print(f"{split}: " + ", ".join(f"{d} {n}" for d, n in counts.items()), markup=False)
    console.print(f"wrote {out} (seed {seed})", markup=False)


@app.command("export-lm-eval")
@guarded
def export_lm_eval_cmd(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="directory for the task YAMLs and JSONL files (lm-eval's --include_path)"),
    data: List[str] = typer.Option([], "--data", help="DOMAIN=FILE or FILE (.jsonl, .csv, .json; repeat)"),
    builtin: bool = typer.Option(False, "--builtin", help="the built-in verified question sets"),
    split: str = typer.Option("test", "--split", help="built-in split: train, validation or test"),
    n_per_domain: int = typer.Option(1000, "--n-per-domain", help="built-in set size per domain (all splits)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most N questions per domain"),
    name: str = typer.Option("tiesmerge", "--name", help="task group name; tasks are NAME_DOMAIN"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty directory"),
) -> None:
    """Write question sets as lm-evaluation-harness tasks (one per domain, and a group), so lm-eval can re-score
    what `tiesmerge eval --mode cloze --cloze-norm sum|chars` scores (its acc / acc_norm).

    Then, for your base and adapter:

      lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER --include_path OUT --tasks tiesmerge
    """
    done = api.export_lm_eval(out, data=data_args(data), builtin=builtin, split=split, n_per_domain=n_per_domain,
                              limit=limit, name=name, force=force)
    console = Console(soft_wrap=True)
    console.print(f"wrote {len(done.tasks)} lm-eval tasks ({', '.join(done.tasks)}; {done.questions} questions) and "
                  f"group {done.group} to {out}", markup=False)
    console.print(f"next: lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER --include_path {out} "
                  f"--tasks {done.group}", markup=False)
