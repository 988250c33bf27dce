"""Load a recipe from YAML with one-line errors, and the presets shipped with the package."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.merge.recipe import Recipe
from tiesmerge.portable import limits


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: `source: loc: message; loc: message`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after",))
        msg = err["msg"].removeprefix("Value error, ")
        key = re.match(r"^([A-Za-z_]\w*): ", msg)
        if key and loc and not loc.endswith(key[1]):  # a model-level check naming its key: parameters.density: …
            loc, msg = f"{loc}.{key[1]}", msg[key.end():]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `tiesmerge validate --help`)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def recipe_from_dict(data: Any, source: str, base_dir: Path, log=None) -> Recipe:
    if not isinstance(data, dict):
        raise BadInputError(f"{source}: a recipe must be a YAML mapping with method, parameters, adapters, output")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(format_validation_error(exc, source)) from None
    return recipe.resolved(base_dir, log)


def read_yaml(path: Path) -> Any:
    """The parsed YAML document at `path` (safe loader), or a one-line BadInputError."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"recipe {path} not found (pass a YAML file, or build one from flags with --adapter)")
    return as_bad_input(limits.read_yaml)(path, "recipe")


def load_recipe(path: Path, log=None) -> Recipe:
    """Parse and validate a recipe file; adapter paths resolve against its folder (Hub ids through the cache)."""
    from tiesmerge.configs.mergekit_yaml import from_mergekit, is_mergekit

    path = Path(path)
    data = read_yaml(path)
    if is_mergekit(data):
        data = from_mergekit(data, str(path))
    return recipe_from_dict(data, str(path), path.parent, log)


def preset_path(name: str) -> Path:
    """Path of a preset shipped in tiesmerge/configs/presets (e.g. four_specialists)."""
    stem = name.removesuffix(".yaml")
    ref = resources.files("tiesmerge.configs") / "presets" / f"{stem}.yaml"
    if not ref.is_file():
        available = sorted(p.name.removesuffix(".yaml") for p in (resources.files("tiesmerge.configs") / "presets").iterdir())
        raise BadInputError(f"no preset {name!r}; available: {', '.join(available)}")
    return Path(str(ref))


def recipe_to_yaml(recipe: Recipe) -> str:
    return recipe.to_yaml()
