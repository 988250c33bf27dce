"""A rich progress bar over modules, on stderr."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tiesmerge.merge.driver import ProgressHook


@contextlib.contextmanager
def module_progress(total: int, label: str = "merging", unit: str = "modules") -> Iterator[ProgressHook]:
    console = Console(stderr=True)
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[module]}", style="dim"),
    )
    if not console.is_terminal:  # logs and CI: a line at every tenth instead of a live bar
        step = max(1, total // 10)

        def plain(done: int, total_: int, name: str) -> None:
            if done % step == 0 or done == total_:
                console.print(f"{label}: {done}/{total_} {unit} ({100 * done // max(total_, 1)}%) {name}", soft_wrap=True)

        yield plain
        return
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, module="")

        def hook(done: int, total_: int, name: str) -> None:
            bar.update(task, completed=done, module=name)

        yield hook
