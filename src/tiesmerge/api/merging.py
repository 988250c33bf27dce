"""`tiesmerge.merge` (adapters on disk → an adapter folder) and `tiesmerge.merge_factors` (tensors → tensors)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import torch

from tiesmerge.adapters.memory import LoraFactors, MemoryAdapter
from tiesmerge.configs.loader import load_recipe, recipe_from_dict
from tiesmerge.devices import resolve_device
from tiesmerge.errors import BadInputError
from tiesmerge.merge import driver
from tiesmerge.merge.job import prepare
from tiesmerge.merge.memory import MergedFactors, merge_to_memory
from tiesmerge.merge.recipe import Recipe
from tiesmerge.progress import module_progress

PathLike = Union[str, Path]
Progress = Union[bool, Callable[[int, int, str], None]]
RecipeLike = Union[PathLike, Recipe, Mapping[str, Any]]


def build_recipe(recipe: RecipeLike | None, *, adapters: Any = None, weights: Any = None, method: Any = None,
                 space: Any = None, rank: Any = None, parameters: Mapping[str, Any] | None = None,
                 base_dir: Path | None = None, **params: Any) -> Recipe:
    """A validated Recipe from a recipe (path, Recipe or mapping) or from keyword arguments; keyword arguments
    override the recipe's values. Raises BadInputError (one line) on any invalid value."""
    overridden = any(v is not None for v in (adapters, weights, method, space, rank, parameters)) or bool(params)
    if isinstance(recipe, Recipe) and not overridden:
        return recipe  # already validated and resolved
    if isinstance(recipe, Recipe):
        data = recipe.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
        data["adapters"] = recipe.model_dump(mode="json", by_alias=True, exclude_none=True)["adapters"]
        source, base_dir = "recipe", base_dir or Path.cwd()
    elif isinstance(recipe, Mapping):
        data, source, base_dir = dict(recipe), "recipe", base_dir or Path.cwd()
    elif recipe is not None:
        path = Path(recipe)
        if not overridden:
            return load_recipe(path, log=logging.getLogger("tiesmerge").info)
        from tiesmerge.configs.loader import read_yaml
        from tiesmerge.configs.mergekit_yaml import from_mergekit, is_mergekit

        raw = read_yaml(path)
        data = from_mergekit(raw, str(path)) if is_mergekit(raw) else dict(raw or {})
        source, base_dir = str(path), path.parent
    else:
        data, source, base_dir = {}, "tiesmerge.merge()", base_dir or Path.cwd()
    if adapters is not None:
        data["adapters"] = _adapter_entries(adapters, weights)
    elif weights is not None:
        raise BadInputError("weights= needs adapters= (or set weight: in the recipe)")
    for key, value in (("method", method), ("space", space)):
        if value is not None:
            data[key] = getattr(value, "value", value)
    if rank is not None:
        data["output"] = {**(data.get("output") or {}), "rank": rank}
    given = {**(parameters or {}), **params}
    if given:
        data["parameters"] = {**(data.get("parameters") or {}), **{("lambda" if k == "lam" else k): getattr(v, "value", v)
                                                                   for k, v in given.items()}}
    if "adapters" not in data:
        raise BadInputError("no adapters: pass a recipe, or adapters={'name': path, …} (a list of paths works too)")
    return recipe_from_dict(data, source, base_dir, log=logging.getLogger("tiesmerge").info)


def _adapter_entries(adapters: Any, weights: Any) -> list[dict[str, Any]]:
    if isinstance(adapters, Mapping):
        items = list(adapters.items())
    elif isinstance(adapters, (str, Path)) or not isinstance(adapters, Sequence):
        raise BadInputError("adapters must be a mapping name → path or a list of paths")
    else:
        items = [(Path(str(p)).name, p) for p in adapters]
    bad = [n for n, _ in items if not isinstance(n, str) or not n.strip()]
    if bad:
        raise BadInputError(f"adapter name {bad[0]!r}: every adapter needs a non-empty name")
    names = [n for n, _ in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInputError(f"two adapters are named {twice[0]!r} (a list of paths is named by each folder's name); "
                            "give adapters={'name': path, …} with distinct names")
    if isinstance(weights, (str, bytes)):
        raise TypeError(f"weights must be a list of numbers (or a mapping name → number), got the string {weights!r}")
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - {n for n, _ in items})
        if unknown:
            raise BadInputError(f"weights name adapters that are not given: {', '.join(unknown)}")
        ws = [weights.get(n, 1.0) for n, _ in items]
    elif weights is not None:
        ws = list(weights)
        if len(ws) != len(items):
            raise BadInputError(f"{len(ws)} weights for {len(items)} adapters; give one weight per adapter")
    else:
        ws = [1.0] * len(items)
    return [{"name": n, "path": str(p) if not isinstance(p, LoraFactors) else f"<memory:{n}>", "weight": w}
            for (n, p), w in zip(items, ws)]


@contextlib.contextmanager
def _hook(progress: Progress, total: int, label: str):
    if progress is True:
        with module_progress(total, label) as hook:
            yield hook
    else:
        yield progress or None


def merge(recipe: RecipeLike | None = None, *, output: PathLike, adapters: Any = None, weights: Any = None,
          method: Any = None, space: Any = None, rank: Any = None, parameters: Mapping[str, Any] | None = None,
          force: bool = False, device: str = "cpu", progress: Progress = False, **params: Any) -> driver.MergeResult:
    """Merge PEFT LoRA / RSLoRA adapters into one adapter folder, exactly in ΔW space (or core space).

    Give a recipe (a YAML path — tiesmerge's or mergekit's —, a `Recipe`, or a mapping), or the adapters and the
    method as keyword arguments; keyword arguments override the recipe. Method parameters go in `parameters=`
    or as keywords (`density=0.2`, `lam=1.0` for λ, `sign="count"`). Writes `output` atomically and returns a
    MergeResult: `.output`, `.modules` (one report per module: rank, retained energy, sign conflicts, …), `.summary`.
    Errors are typed (tiesmerge.BadInputError: the input is wrong, the message says how), never SystemExit.

    Example:

        >>> import tiesmerge
        >>> result = tiesmerge.merge(adapters={"math": "./math", "code": "./code"}, method="ties",
        ...                          density=0.2, rank=64, output="merged/")
        >>> result.summary["retained_energy_mean"]
    """
    spec = build_recipe(recipe, adapters=adapters, weights=weights, method=method, space=space, rank=rank,
                        parameters=parameters, **params)
    job = prepare(spec, log=logging.getLogger("tiesmerge").info)
    with _hook(progress, len(job.plan.modules), "merging") as hook:
        return driver.run(job, Path(output), force=force, device=resolve_device(device), progress=hook,
                          command="tiesmerge.merge()")


def merge_factors(adapters: Mapping[str, LoraFactors], *, weights: Any = None, method: Any = "ties",
                  space: Any = "full", rank: Any = "auto", parameters: Mapping[str, Any] | None = None,
                  device: str = "cpu", progress: Progress = False, **params: Any) -> MergedFactors:
    """Merge adapters held in memory (no files): each a `LoraFactors` (module → (A, B) and its PEFT scale).

    Returns MergedFactors: `.factors` (module → (A, B), scale 1), `.config` (the PEFT LoraConfig fields giving
    that scale), `.reports`, `.summary`, `.delta(module)`. The same code as `merge` on the same numbers.

    Example:

        >>> from tiesmerge import LoraFactors, merge_factors
        >>> a = LoraFactors({"model.layers.0.self_attn.q_proj": (A1, B1)}, scale=2.0)
        >>> b = LoraFactors({"model.layers.0.self_attn.q_proj": (A2, B2)}, scale=2.0)
        >>> merged = merge_factors({"a": a, "b": b}, method="ties", density=0.5, rank=8)
        >>> A, B = merged.factors["model.layers.0.self_attn.q_proj"]
    """
    if not isinstance(adapters, Mapping) or not adapters:
        raise BadInputError("merge_factors needs adapters={'name': LoraFactors(...), …}")
    bad = [n for n, a in adapters.items() if not isinstance(a, LoraFactors)]
    if bad:
        raise BadInputError(f"adapter(s) {', '.join(map(repr, bad))}: give tiesmerge.LoraFactors (module → (A, B) and "
                            "its scale); for folders use tiesmerge.merge")
    spec = build_recipe(None, adapters=adapters, weights=weights, method=method, space=space, rank=rank,
                        parameters=parameters, **params)
    readers = [MemoryAdapter(adapters[a.name], a.name) for a in spec.adapters]
    job = prepare(spec, readers)
    with _hook(progress, len(job.plan.modules), "merging") as hook:
        return merge_to_memory(job, resolve_device(device) if device != "cpu" else torch.device("cpu"), hook)
