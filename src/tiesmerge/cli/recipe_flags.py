"""A recipe from a file and/or command-line flags (shared by merge, validate, calibrate and refine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from tiesmerge.configs.loader import read_yaml, recipe_from_dict
from tiesmerge.configs.mergekit_yaml import from_mergekit, is_mergekit
from tiesmerge.errors import BadInputError
from tiesmerge.merge.recipe import Recipe
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.types import Method


def parse_adapter_flag(spec: str) -> dict[str, Any]:
    """`NAME=PATH[:WEIGHT]` or `PATH[:WEIGHT]` → an adapters entry."""
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = "", spec
    entry: dict[str, Any] = {}
    path, colon, weight = rest.rpartition(":")
    if colon and path:
        try:
            entry["weight"] = float(weight)
        except ValueError:
            path = rest  # a ':' that is part of the path
    else:
        path = rest
    if not path:
        raise BadInputError(f"--adapter {spec!r}: expected NAME=PATH[:WEIGHT], e.g. --adapter math=./math:0.25")
    entry["path"] = path
    if name:
        entry["name"] = name
    return entry


def rank_value(rank: str) -> Any:
    return int(rank) if rank.strip().lstrip("-").isdigit() else rank.strip()


def _drop_inapplicable(data: dict[str, Any], method: str) -> list[str]:
    """When --method replaces the recipe's method, drop the recipe parameters the new one does not read."""
    try:
        reads = {p.name for p in get_method(Method(method)).parameters}
    except ValueError:
        return []  # an unknown method: validation reports it
    reads |= {"trim"} if "density" in reads else set()
    params = dict(data.get("parameters") or {})
    dropped = sorted(k for k in params if k not in reads)
    data["parameters"] = {k: v for k, v in params.items() if k in reads}
    if "density" not in reads:
        for entry in data.get("adapters") or []:
            if isinstance(entry, dict) and (entry.pop("density", None) is not None) | (entry.pop("trim", None) is not None):
                dropped.append(f"adapters.{entry.get('name', '?')}.density")
    return dropped


def build_recipe(recipe: Optional[Path], adapters: List[str], overrides: dict[tuple[str, ...], Any],
                 notes: Optional[list[str]] = None) -> Recipe:
    """A recipe from a file and/or flags; flags override the file's values (`notes` collects what was dropped)."""
    if recipe is None and not adapters:
        raise BadInputError("give a recipe file, or adapters with --adapter NAME=PATH[:WEIGHT] (see --help)")
    data: dict[str, Any] = {}
    if recipe is not None:
        raw = read_yaml(recipe)
        if not isinstance(raw, dict):
            raise BadInputError(f"{recipe}: a recipe must be a YAML mapping with method, parameters, adapters, output")
        data = from_mergekit(raw, str(recipe), notes) if is_mergekit(raw) else dict(raw)
        if adapters:
            raise BadInputError("adapters come from the recipe or from --adapter, not both; drop one")
    if adapters:
        data["adapters"] = [parse_adapter_flag(a) for a in adapters]
    new_method = overrides.get(("method",))
    if recipe is not None and new_method is not None and new_method != data.get("method", Method.ties.value):
        dropped = _drop_inapplicable(data, new_method)
        if dropped and notes is not None:
            notes.append(f"--method {new_method} does not read the recipe's {', '.join(dropped)}; ignoring them")
    for path, value in overrides.items():
        if value is None:
            continue
        node = data
        for key in path[:-1]:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        if path[-1] in ("density", "trim"):  # a flag replaces the recipe's density/trim, whichever it used
            node.pop("density", None)
            node.pop("trim", None)
        node[path[-1]] = value
    source = str(recipe) if recipe is not None else "command line"
    base_dir = recipe.parent if recipe is not None else Path.cwd()
    return recipe_from_dict(data, source, base_dir, log=note)


def note(message: str) -> None:
    """One `note:` line on stderr (which copy of a Hub id is used, …)."""
    import sys

    print(f"note: {message}", file=sys.stderr)
