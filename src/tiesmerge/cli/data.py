"""`tiesmerge data`: build the built-in verified question sets as JSONL files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tiesmerge.atomic import atomic_output_dir
from tiesmerge.cli.common import guarded
from tiesmerge.extras import Extra, require

app = typer.Typer(help="Built-in question sets (math, code, stem, humanities).", no_args_is_help=True)


@app.command("build")
@guarded
def build_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="directory for {split}/{domain}.jsonl and manifest.json"),
    n_per_domain: int = typer.Option(1000, "--n-per-domain", min=20, help="questions per domain, split 70/10/20 "
                                     "into train / validation / test"),
    seed: int = typer.Option(0, "--seed", help="generation seed"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty directory"),
) -> None:
    """Generate the question sets deterministically; every answer is computed, run or looked up by an oracle."""
    require(Extra.eval, "tiesmerge data build")
    from tiesmerge.eval.builtin.build import build, write

    with atomic_output_dir(out, force) as tmp:
        manifest = write(build(n_per_domain, seed), tmp, seed=seed, n_per_domain=n_per_domain)
    console = Console(soft_wrap=True)
    for split, counts in manifest["splits"].items():
        console.print(f"{split}: " + ", ".join(f"{d} {n}" for d, n in counts.items()), markup=False)
    console.print(f"wrote {out} (seed {seed})", markup=False)
