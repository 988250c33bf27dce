"""The one recipe builder: a recipe (YAML path — tiesmerge's or mergekit's —, `Recipe` or mapping) and/or keyword
values → a validated Recipe. `tiesmerge.merge`, `validate`, `calibrate`, `refine` and every CLI command that takes
a recipe build it here, so the API and the CLI accept and refuse the same inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from tiesmerge.adapters.memory import LoraFactors
from tiesmerge.configs.loader import read_yaml, recipe_from_dict
from tiesmerge.configs.mergekit_yaml import from_mergekit, is_mergekit
from tiesmerge.errors import BadInputError
from tiesmerge.merge.recipe import Recipe
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.types import Method

PathLike = Union[str, Path]
RecipeLike = Union[PathLike, Recipe, Mapping[str, Any]]


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


def build_recipe(recipe: RecipeLike | None = None, *, adapters: Any = None, weights: Any = None, method: Any = None,
                 space: Any = None, rank: Any = None, parameters: Mapping[str, Any] | None = None,
                 output: Mapping[str, Any] | None = None, base_model: Optional[str] = None,
                 allow_base_mismatch: Optional[bool] = None, base_dir: Path | None = None,
                 notes: Optional[list[str]] = None, log: Callable[[str], None] = _log, **params: Any) -> Recipe:
    """A validated Recipe; keyword values override the recipe's (a new `method` drops the recipe's parameters it
    does not read, each named in `notes`). Adapters come from the recipe or from `adapters=`, never both:
    a mapping name → path (or LoraFactors), a list of paths (named by folder), or a list of entries
    `{"name", "path", "weight"}`. Raises BadInputError (one line) on any invalid value, TypeError on a wrong type."""
    if isinstance(recipe, Recipe) and adapters is None and not any(
            v is not None for v in (weights, method, space, rank, parameters, output, base_model, allow_base_mismatch)) \
            and not params:
        return recipe  # already validated and resolved
    data, source, base_dir = _recipe_data(recipe, base_dir, notes)
    if adapters is not None:
        if data.get("adapters"):
            raise BadInputError("adapters come from the recipe or from --adapter / adapters=, not both; drop one")
        data["adapters"] = _adapter_entries(adapters, weights)
    elif weights is not None:
        raise BadInputError("weights= needs adapters= (or set weight: in the recipe)")
    new_method = getattr(method, "value", method)
    if recipe is not None and new_method is not None and new_method != data.get("method", Method.ties.value):
        dropped = _drop_inapplicable(data, new_method)
        if dropped and notes is not None:
            notes.append(f"method {new_method} does not read the recipe's {', '.join(dropped)}; ignoring them")
    for key, value in (("method", method), ("space", space), ("base_model", base_model)):
        if value is not None:
            data[key] = getattr(value, "value", value)
    if allow_base_mismatch:
        data["allow_base_mismatch"] = True
    out = {**(output or {}), **({"rank": rank} if rank is not None else {})}
    if out:
        data["output"] = {**(data.get("output") or {}), **{k: v for k, v in out.items() if v is not None}}
    given = {("lambda" if k == "lam" else k): getattr(v, "value", v) for k, v in {**(parameters or {}), **params}.items()
             if v is not None}
    if given:
        current = dict(data.get("parameters") or {})
        if "density" in given or "trim" in given:  # a new density replaces the recipe's density/trim, whichever
            current.pop("density", None)
            current.pop("trim", None)
        data["parameters"] = {**current, **given}
    if not data.get("adapters"):
        raise BadInputError("no adapters: give a recipe, or adapters (--adapter NAME=PATH[:WEIGHT]; "
                            "adapters={'name': path, …} in Python)")
    return recipe_from_dict(data, source, base_dir, log=log)


def _recipe_data(recipe: RecipeLike | None, base_dir: Path | None, notes) -> tuple[dict[str, Any], str, Path]:
    if recipe is None:
        return {}, "command line", base_dir or Path.cwd()
    if isinstance(recipe, Recipe):
        data = recipe.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
        data["adapters"] = recipe.model_dump(mode="json", by_alias=True, exclude_none=True)["adapters"]
        return data, "recipe", base_dir or Path.cwd()
    if isinstance(recipe, Mapping):
        return dict(recipe), "recipe", base_dir or Path.cwd()
    if not isinstance(recipe, (str, Path)):
        raise TypeError(f"recipe must be a path, a tiesmerge.Recipe or a mapping, not {type(recipe).__name__}")
    path = Path(recipe)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise BadInputError(f"{path}: a recipe must be a YAML mapping with method, parameters, adapters, output")
    data = from_mergekit(raw, str(path), notes) if is_mergekit(raw) else dict(raw)
    return data, str(path), path.parent


def _drop_inapplicable(data: dict[str, Any], method: str) -> list[str]:
    """When a new method replaces the recipe's, drop the recipe parameters the new one does not read."""
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


def _adapter_entries(adapters: Any, weights: Any) -> list[dict[str, Any]]:
    if isinstance(adapters, Mapping):
        items = [{"name": n, "path": p} for n, p in adapters.items()]
    elif isinstance(adapters, (str, bytes, Path)) or not isinstance(adapters, Sequence):
        raise TypeError("adapters must be a mapping name → path or a list of paths, not "
                        f"{'the string ' + repr(adapters) if isinstance(adapters, (str, bytes)) else type(adapters).__name__}")
    else:
        items = [dict(p) if isinstance(p, Mapping) else {"path": p} for p in adapters]
        for entry in items:
            if "name" not in entry and entry.get("path") is not None:
                entry["name"] = Path(str(entry["path"])).name
    bad = [e.get("name") for e in items if not isinstance(e.get("name"), str) or not e["name"].strip()]
    if bad:
        raise BadInputError(f"adapter name {bad[0]!r}: every adapter needs a non-empty name")
    names = [e["name"] for e in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInputError(f"two adapters are named {twice[0]!r} (a path is named by its folder's name); "
                            "give each adapter a distinct name (NAME=PATH)")
    if isinstance(weights, (str, bytes)):
        raise TypeError(f"weights must be a list of numbers (or a mapping name → number), got the string {weights!r}")
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise BadInputError(f"weights name adapters that are not given: {', '.join(unknown)}")
        for e in items:
            e["weight"] = weights.get(e["name"], e.get("weight", 1.0))
    elif weights is not None:
        ws = list(weights)
        if len(ws) != len(items):
            raise BadInputError(f"{len(ws)} weights for {len(items)} adapters; give one weight per adapter")
        for e, w in zip(items, ws):
            e["weight"] = w
    for e in items:
        if isinstance(e.get("path"), LoraFactors):
            e["path"] = f"<memory:{e['name']}>"
        elif isinstance(e.get("path"), Path):
            e["path"] = str(e["path"])
    return items


def parse_adapter_flag(spec: str) -> dict[str, Any]:
    """`NAME=PATH[:WEIGHT]` or `PATH[:WEIGHT]` → an adapters entry (the CLI's --adapter)."""
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
