"""`tiesmerge inspect`: what each adapter is, and whether the set can be merged."""

from __future__ import annotations

import json
from typing import List

import typer
from rich.console import Console

from tiesmerge import api
from tiesmerge.cli.common import fail, guarded
from tiesmerge.cli.recipe_flags import note


@guarded
def inspect(
    ctx: typer.Context,
    paths: List[str] = typer.Argument(..., help="one or more PEFT adapter folders or Hub ids org/name[@revision]"),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="do not fail on differing base models"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
) -> None:
    """Show each adapter's rank, α, RSLoRA flag, scale, targets, size and base, then a verdict for the set."""
    out = Console(soft_wrap=True)
    seen = api.inspect(paths, allow_base_mismatch=allow_base_mismatch, strict=False, log=note)
    rows, problems, verdict = seen.adapters, seen.problems, seen.verdict
    code = 0 if seen.compatible else 2
    if as_json:
        out.print_json(json.dumps({"adapters": rows, "problems": problems, "verdict": verdict}))
    else:
        for row in rows:
            out.print(f"[bold]{row['name']}[/bold]  {row['path']}", markup=True, highlight=False)
            out.print(f"  r {row['rank']}, lora_alpha {row['alpha']}, rslora {row['rslora']}, scale {row['scale']}",
                      markup=False, highlight=False)
            out.print(f"  {row['modules']} modules ({', '.join(row['targets'])}), {row['parameters']:,} parameters, "
                      f"{'/'.join(row['dtype'])}", markup=False, highlight=False)
            out.print(f"  base model: {row['base_model'] or 'not named'}", markup=False, highlight=False)
        if code == 0:
            out.print(verdict, markup=False, highlight=False)
    if code:
        for problem in problems[1:]:
            typer.echo(f"error: {problem}", err=True)
        raise fail(verdict, code)
