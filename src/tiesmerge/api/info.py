"""`tiesmerge.inspect`, `tiesmerge.validate` and `tiesmerge.methods`: the CLI's read-only commands, as functions
returning data (no printing, no SystemExit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from tiesmerge.adapters import hub
from tiesmerge.adapters.compat import plan_set
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.adapters.summary import summary
from tiesmerge.api.recipes import RecipeLike
from tiesmerge.errors import BadInputError
from tiesmerge.merge.registry import REGISTRY

PathLike = Union[str, Path]


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


@dataclass(frozen=True)
class Inspection:
    """`adapters`: one mapping per readable adapter (name, path, rank, alpha, rslora, scale, targets, modules,
    parameters, dtype, base_model); `problems`: one line per adapter that could not be read; `compatible`: whether
    the set can be merged; `verdict`: the one-line reason (the CLI's last line)."""

    adapters: list[dict[str, Any]]
    compatible: bool
    verdict: str
    problems: list[str] = field(default_factory=list)


def inspect(paths: PathLike | Sequence[PathLike], *, allow_base_mismatch: bool = False, strict: bool = True,
            log: Callable[[str], None] = _log) -> Inspection:
    """What each adapter is, and whether the set can be merged. An unreadable adapter raises BadInputError; with
    `strict=False` it is listed in `.problems` instead and the others are still described (the CLI's way).

    Example:

        >>> tiesmerge.inspect(["./math", "./code"]).verdict
        'compatible: 2 adapter(s), 196 modules (196 in every adapter), base Qwen/Qwen2.5-7B-Instruct'
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise BadInputError("inspect needs at least one adapter folder")
    readers, rows, problems = [], [], []
    for path in paths:
        try:
            folder = hub.resolve(str(path), "adapter", log=log)
            # a Hub id is named by the id, not by its snapshot folder (a commit hash)
            name = str(path) if hub.hub_id(str(path)) is not None and folder != Path(str(path)) else \
                (folder.name or str(folder))
            reader = AdapterReader(folder, name)
        except BadInputError as exc:
            if strict:
                raise
            problems.append(str(exc))
            continue
        readers.append(reader)
        rows.append(summary(reader))
    if problems:
        return Inspection(rows, False, f"invalid: {problems[0]}", problems)
    try:
        plan = plan_set(readers, None, allow_base_mismatch)
    except BadInputError as exc:
        return Inspection(rows, False, f"incompatible set: {exc}")
    everywhere = sum(1 for m in plan.modules if len(m.members) == len(readers))
    return Inspection(rows, True, f"compatible: {len(readers)} adapter(s), {len(plan.modules)} modules "
                                  f"({everywhere} in every adapter), base {plan.base_model or 'not named'}")


@dataclass(frozen=True)
class Validation:
    """A recipe that passed every check: the plan as text lines and the warnings the merge would print."""

    plan: list[str]
    warnings: list[str] = field(default_factory=list)


def validate(recipe: RecipeLike) -> Validation:
    """Check a recipe (path, Recipe or mapping) and the adapters it names without merging; raises BadInputError.

    Example:

        >>> tiesmerge.validate("recipe.yaml").plan[0]
        "method: ties (native, chunked from factors), full space  parameters: {'density': 0.2, …}"
    """
    from tiesmerge.api.merging import plan_merge

    plan = plan_merge(recipe)
    return Validation(plan.lines, plan.warnings)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    parameters: list[str]  # "name (type, range, default …): help", one per parameter the method reads
    runs: str
    reference: str


def methods() -> list[MethodInfo]:
    """Every merge method with the parameters it reads (each declared once: type, range, default, help).

    Example:

        >>> [m.name for m in tiesmerge.methods()][:3]
        ['ties', 'task_arithmetic', 'dare_ties']
    """
    return [MethodInfo(s.method.value, s.summary, [p.describe() for p in s.parameters], s.runs, s.reference)
            for s in REGISTRY.values()]


def parameters() -> list[str]:
    """Every recipe parameter once: "name (type, range, default …): help" (what `tiesmerge methods` lists)."""
    from tiesmerge.merge.registry import known_parameters

    return [d.describe() for d in known_parameters().values()]
