"""`tiesmerge methods`: the merge methods and the recipe parameters each one reads."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from tiesmerge import api
from tiesmerge.cli.common import guarded


@guarded
def methods(ctx: typer.Context) -> None:
    """List the merge methods, how they run, and their parameters."""
    table = Table(title="merge methods (recipe `method:`)", title_justify="left")
    table.add_column("method", no_wrap=True)  # a name is never broken or cut: the other columns give way
    for col in ("what it does", "parameters", "runs", "reference"):
        table.add_column(col, overflow="fold")
    for m in api.methods():
        table.add_row(m.name, m.summary, ", ".join(p.split(" ", 1)[0] for p in m.parameters), m.runs, m.reference)
    console = Console()
    console.print(table)
    console.print("\nparameters (recipe `parameters:`; type, range, default):", soft_wrap=True)
    for line in api.parameters():
        console.print(f"  {line}", soft_wrap=True, markup=False)
