"""Progress hooks shared by eval, sweep and the demo: (total, label, unit) → a context manager yielding hook(done, total, note)."""

from __future__ import annotations

from typing import Callable, ContextManager

ProgressHook = Callable[[int, int, str], None]
ProgressFactory = Callable[[int, str, str], ContextManager[ProgressHook]]
