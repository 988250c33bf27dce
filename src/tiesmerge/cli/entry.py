"""The `tiesmerge` console script. Signals are handled from its first line: importing typer, torch and the
commands takes a second or more, and a Ctrl-C or SIGTERM in that window would otherwise print a 40-line
KeyboardInterrupt traceback (SIGINT) or end silently (SIGTERM). Nothing has been written then, so one line and
the signal's exit code (128 + N) is all there is to say."""

import os
import sys

from tiesmerge.cli.start import install_start_handlers


def main() -> None:
    install_start_handlers()
    if os.environ.get("TIESMERGE_TEST_SLOW_START"):  # the signal test's window, wide enough to hit reliably
        import time

        time.sleep(float(os.environ["TIESMERGE_TEST_SLOW_START"]))
    from tiesmerge.cli.app import main as run_app  # the heavy imports

    run_app()
    sys.exit(0)
