"""The start-up signal handler: a signal that arrives while Python is still importing typer, torch and the commands
ends the process with one line and exit 128 + N (nothing has been written yet). Standard library only, so it can
be installed before anything heavy; the commands replace it with their own (cli/common.handle_signals)."""

import os
import signal

EARLY = ("SIGINT", "SIGTERM", "SIGHUP")


def _while_starting(signum, frame):  # pragma: no cover - runs in the child of the signal test
    name = signal.Signals(signum).name
    os.write(2, f"error: interrupted by {name} while starting; nothing was written\n".encode())
    os._exit(128 + signum)


def install_start_handlers() -> None:
    """One line and exit 128 + N for a signal that arrives before the commands' own handlers are installed."""
    for name in EARLY:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _while_starting)
