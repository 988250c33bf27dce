"""`tiesmerge methods`: the merge methods and the recipe parameters each one reads."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from tiesmerge.cli.common import guarded
from tiesmerge.merge.registry import REGISTRY, known_parameters


@guarded
def methods(ctx: typer.Context) -> None:
    """List the merge methods, how they run, and their parameters."""
    table = Table(title="merge methods (recipe `method:`)", title_justify="left")
    table.add_column("method", no_wrap=True)  # a name is never broken or cut: the other columns give way
    for col in ("what it does", "parameters", "runs", "reference"):
        table.add_column(col, overflow="fold")
    for spec in REGISTRY.values():
        table.add_row(spec.method.value, spec.summary, ", ".join(p.name for p in spec.parameters), spec.runs,
                      spec.reference)
    console = Console()
    console.print(table)
    console.print("\nparameters (recipe `parameters:`; type, range, default):", soft_wrap=True)
    for definition in known_parameters().values():
        console.print(f"  {definition.describe()}", soft_wrap=True, markup=False)
