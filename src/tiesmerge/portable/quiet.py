"""Keep third-party notices that a user cannot act on off the terminal; called by entry points only.

peft imports bitsandbytes whenever it is installed, and bitsandbytes logs at import time that an optional Hub
kernel package is missing (its generic kernels are used); transformers and peft emit deprecation notices about
each other. None of these concern a tiesmerge user. `--debug` / TIESMERGE_DEBUG=1 keep them all.
(Portable: the deployed agents call it too.)
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

NOISY_LOGGERS = ("bitsandbytes",)


def quiet_libraries(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    if os.environ.get("TIESMERGE_DEBUG") or "--debug" in argv:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    # an older peft reading an adapter_config.json written by a newer one lists the keys it does not know;
    # they are optional features this adapter does not use
    warnings.filterwarnings("ignore", message="Unexpected keyword arguments", category=UserWarning)
    # switching a PeftModel between adapters the tool attached itself (refine's teachers, RegMean++'s specialists):
    # nothing the user did or can change
    warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted", category=UserWarning)
