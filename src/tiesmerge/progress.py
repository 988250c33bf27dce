"""Progress hooks shared by eval, sweep and the demo: (total, label, unit) → a context manager yielding hook(done, total, note)."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

ProgressHook = Callable[[int, int, str], None]
ProgressFactory = Callable[[int, str, str], ContextManager[ProgressHook]]


@contextlib.contextmanager
def module_progress(total: int, label: str = "merging", unit: str = "modules") -> Iterator[ProgressHook]:
    """A rich progress bar on stderr (a line every tenth when stderr is not a terminal), as a ProgressHook."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
