"""`tiesmerge.inspect`, `tiesmerge.validate`, `tiesmerge.methods` and `tiesmerge.export`: the CLI's read-only
commands and the exports, as functions returning data (no printing, no SystemExit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from tiesmerge.adapters import hub
from tiesmerge.adapters.compat import plan_set
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.adapters.summary import summary
from tiesmerge.api.merging import RecipeLike, build_recipe
from tiesmerge.errors import BadInputError
from tiesmerge.merge.job import describe, prepare
from tiesmerge.merge.registry import REGISTRY

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Inspection:
    """`adapters`: one mapping per adapter (name, path, rank, alpha, rslora, scale, targets, modules, parameters,
    dtype, base_model); `compatible`: whether the set can be merged; `verdict`: the one-line reason."""

    adapters: list[dict[str, Any]]
    compatible: bool
    verdict: str


def inspect(paths: PathLike | Sequence[PathLike], *, allow_base_mismatch: bool = False) -> Inspection:
    """What each adapter is, and whether the set can be merged. An unreadable adapter raises BadInputError.

    Example:

        >>> tiesmerge.inspect(["./math", "./code"]).verdict
        'compatible: 2 adapter(s), 196 modules (196 in every adapter), base Qwen/Qwen2.5-7B-Instruct'
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise BadInputError("inspect needs at least one adapter folder")
    log = logging.getLogger("tiesmerge").info
    folders = [hub.resolve(str(p), "adapter", log=log) for p in paths]
    readers = [AdapterReader(p, p.name or str(p)) for p in folders]
    rows = [summary(r) for r in readers]
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
    job = prepare(build_recipe(recipe), log=logging.getLogger("tiesmerge").info)
    return Validation(describe(job), list(job.warnings))


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


def export(adapter: PathLike, *, to: str, output: PathLike, base: PathLike | None = None, force: bool = False,
           progress=None):
    """Export an adapter for a serving stack: `to="vllm"` (uniform rank, scale folded, what vLLM reads right),
    `"gguf"` (a llama.cpp LoRA file; base from `base` or the adapter's local base_model_name_or_path) or
    `"model"` (the base with ΔW folded in; needs `base`). Returns the export's result (its `.path`, …).

    Example:

        >>> tiesmerge.export("merged/", to="vllm", output="merged-vllm/").rank
        64
    """
    from tiesmerge.export.formats import ExportFormat

    fmt = ExportFormat.parse(to, "to")
    log = logging.getLogger("tiesmerge").info
    adapter = hub.resolve(str(adapter), "adapter", log=log)
    base = hub.resolve(str(base), "base", files=None, log=log) if base is not None else None
    if fmt is ExportFormat.vllm:
        from tiesmerge.export.vllm import export_vllm

        return export_vllm(Path(adapter), Path(output), force=force, progress=progress)
    if fmt is ExportFormat.gguf:
        from tiesmerge.export.gguf_lora import export_gguf

        return export_gguf(Path(adapter), Path(base) if base is not None else None, Path(output), force=force)
    if base is None:
        raise BadInputError("export to='model' needs base=, the base model's local folder")
    from tiesmerge.export.model import export_model

    return export_model(Path(adapter), Path(base), Path(output), force=force, progress=progress)
