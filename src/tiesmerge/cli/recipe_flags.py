"""The recipe flags shared by merge, validate, calibrate and refine: `--adapter NAME=PATH[:WEIGHT]` and `--rank`,
read into the keyword arguments of tiesmerge.api's one recipe builder."""

from __future__ import annotations

import sys
from typing import Any, List, Optional

from tiesmerge.api.recipes import parse_adapter_flag
from tiesmerge.errors import BadInputError


def adapters_from_flags(recipe: Any, adapters: List[str]) -> Optional[list[dict[str, Any]]]:
    """--adapter values → adapter entries (None: the recipe names them)."""
    if recipe is None and not adapters:
        raise BadInputError("give a recipe file, or adapters with --adapter NAME=PATH[:WEIGHT] (see --help)")
    return [parse_adapter_flag(a) for a in adapters] or None


def rank_value(rank: str) -> Any:
    return int(rank) if rank.strip().lstrip("-").isdigit() else rank.strip()


def note(message: str) -> None:
    """One `note:` line on stderr (which copy of a Hub id is used, …)."""
    print(f"note: {message}", file=sys.stderr)
