"""`tiesmerge inspect`: what each adapter is, and whether the set can be merged."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich.console import Console
from rich.table import Table

from tiesmerge.adapters.compat import plan_set
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.cli.common import fail, guarded
from tiesmerge.errors import BadInputError


def _span(values: list) -> str:
    lo, hi = min(values), max(values)
    fmt = (lambda v: f"{v:g}") if isinstance(lo, float) else str
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


@guarded
def inspect(
    ctx: typer.Context,
    paths: List[Path] = typer.Argument(..., help="one or more PEFT adapter directories"),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="do not fail on differing base models"),
) -> None:
    """Show each adapter's rank, α, RSLoRA flag, scale, targets, size and base, then a verdict for the set."""
    out = Console()
    table = Table(title="adapters", title_justify="left")
    for col in ("name", "r", "alpha", "rslora", "scale", "targets", "modules", "params", "dtype", "base model"):
        table.add_column(col, overflow="fold")
    readers, problems = [], []
    for path in paths:
        name = path.name or str(path)
        try:
            reader = AdapterReader(path, name)
        except BadInputError as exc:
            problems.append(str(exc))
            table.add_row(name, *["—"] * 8, "[red]invalid[/red]")
            continue
        readers.append(reader)
        mods = list(reader.modules.values())
        targets = sorted({m.name.rsplit(".", 1)[-1] for m in mods})
        table.add_row(
            name,
            _span([m.rank for m in mods]),
            _span(sorted({reader.settings.alpha_of(m.name) for m in mods})),
            str(reader.settings.use_rslora),
            _span([round(m.scale, 6) for m in mods]),
            ",".join(targets),
            str(len(mods)),
            f"{reader.parameter_count:,}",
            ",".join(sorted({str(m.dtype).removeprefix("torch.") for m in mods})),
            reader.settings.base_model or "—",
        )
    out.print(table)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(2)
    try:
        plan = plan_set(readers, None, allow_base_mismatch)
    except BadInputError as exc:
        raise fail(f"incompatible set: {exc}", 2) from None
    everywhere = sum(1 for m in plan.modules if len(m.members) == len(readers))
    out.print(
        f"[green]compatible[/green]: {len(readers)} adapter(s), {len(plan.modules)} modules "
        f"({everywhere} in every adapter), base {plan.base_model or 'not named'}",
        soft_wrap=True,
    )
