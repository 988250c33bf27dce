"""`tiesmerge inspect`: what each adapter is, and whether the set can be merged."""

from __future__ import annotations

import json
from typing import List

import typer
from rich.console import Console

from tiesmerge.adapters import hub
from tiesmerge.adapters.compat import plan_set
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.adapters.summary import summary
from tiesmerge.cli.common import fail, guarded
from tiesmerge.cli.recipe_flags import note
from tiesmerge.errors import BadInputError


@guarded
def inspect(
    ctx: typer.Context,
    paths: List[str] = typer.Argument(..., help="one or more PEFT adapter folders or Hub ids org/name[@revision]"),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="do not fail on differing base models"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
) -> None:
    """Show each adapter's rank, α, RSLoRA flag, scale, targets, size and base, then a verdict for the set."""
    out = Console(soft_wrap=True)
    readers, problems, rows = [], [], []
    for path in paths:
        try:
            path = hub.resolve(str(path), "adapter", log=note)
            reader = AdapterReader(path, path.name or str(path))
        except BadInputError as exc:
            problems.append(str(exc))
            continue
        readers.append(reader)
        rows.append(summary(reader))
    verdict, code = "", 0
    if problems:
        verdict, code = f"invalid: {problems[0]}", 2
    else:
        try:
            plan = plan_set(readers, None, allow_base_mismatch)
            everywhere = sum(1 for m in plan.modules if len(m.members) == len(readers))
            verdict = (f"compatible: {len(readers)} adapter(s), {len(plan.modules)} modules "
                       f"({everywhere} in every adapter), base {plan.base_model or 'not named'}")
        except BadInputError as exc:
            verdict, code = f"incompatible set: {exc}", 2
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
