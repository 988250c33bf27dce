"""The `tiesmerge` console script. Signals are handled from its first line: importing typer, torch and the
commands takes a second or more, and a Ctrl-C or SIGTERM in that window would otherwise print a 40-line
KeyboardInterrupt traceback (SIGINT) or end silently (SIGTERM). Nothing has been written then, so one line and
the signal's exit code (128 + N) is all there is to say."""

import os
import signal
import sys

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


def main() -> None:
    install_start_handlers()
    if os.environ.get("TIESMERGE_TEST_SLOW_START"):  # the signal test's window, wide enough to hit reliably
        import time

        time.sleep(float(os.environ["TIESMERGE_TEST_SLOW_START"]))
    from tiesmerge.cli.app import main as run_app  # the heavy imports

    run_app()
    sys.exit(0)
