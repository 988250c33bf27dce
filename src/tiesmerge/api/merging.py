"""`tiesmerge.merge` (adapters on disk → an adapter folder) and `tiesmerge.merge_factors` (tensors → tensors)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch

from tiesmerge.adapters.memory import LoraFactors, MemoryAdapter
from tiesmerge.api.calibrating import protected_inputs, with_statistics
from tiesmerge.api.recipes import RecipeLike, build_recipe
from tiesmerge.calibration.prompts import DEFAULT_SIZE
from tiesmerge.devices import resolve_device
from tiesmerge.errors import BadInputError
from tiesmerge.merge import driver
from tiesmerge.merge.job import prepare
from tiesmerge.merge.memory import MergedFactors, merge_to_memory
from tiesmerge.merge.recipe import Recipe
from tiesmerge.progress import module_progress

PathLike = Union[str, Path]
Progress = Union[bool, Callable[[int, int, str], None]]


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


@contextlib.contextmanager
def _hook(progress: Progress, total: int, label: str):
    if progress is True:
        with module_progress(total, label) as hook:
            yield hook
    else:
        yield progress or None


@dataclass(frozen=True)
class MergePlan:
    """A merge checked and planned, nothing written: `lines` (the plan as text), `warnings`, `notes` (values the
    recipe gave that this merge does not read), `recipe` (validated, statistics filled in). Pass it to `merge`."""

    recipe: Recipe
    job: Any
    lines: list[str]
    warnings: list[str]
    notes: list[str]
    source: Any = None  # the recipe as given (a path is protected from the output)
    calibration: Optional[Mapping[str, Any]] = None
    base: Optional[str] = None


def plan_merge(recipe: RecipeLike | None = None, *, adapters: Any = None, weights: Any = None, method: Any = None,
               space: Any = None, rank: Any = None, parameters: Mapping[str, Any] | None = None,
               output: Mapping[str, Any] | None = None, base_model: Optional[str] = None,
               allow_base_mismatch: Optional[bool] = None, calibration: Mapping[str, Any] | None = None,
               calibration_size: int = DEFAULT_SIZE, prompt_format: Any = "cloze", base: Optional[str] = None,
               device: str = "auto", log: Callable[[str], None] = _log, **params: Any) -> MergePlan:
    """Check a merge without running it: the recipe, the adapters, the set's compatibility and, for calibrated
    methods (regmean, regmean_pp), their statistics — cached, or collected on `base` when given."""
    from tiesmerge.merge.job import describe
    from tiesmerge.merge.registry import get as get_method

    notes: list[str] = []
    spec = build_recipe(recipe, adapters=adapters, weights=weights, method=method, space=space, rank=rank,
                        parameters=parameters, output=output, base_model=base_model,
                        allow_base_mismatch=allow_base_mismatch, notes=notes, log=log, **params)
    notes += spec.output.unused()
    if get_method(spec.method).statistics is not None:
        spec = with_statistics(spec, calibration, size=calibration_size, prompt_format=prompt_format, base=base,
                               device=device, log=log)
    elif calibration or base is not None:
        raise BadInputError(f"--calibration and --base apply to calibrated methods (regmean, regmean_pp), not "
                            f"{spec.method.value}")
    job = prepare(spec, log=log)
    return MergePlan(spec, job, describe(job), list(job.warnings), notes, recipe, calibration, base)


def merge(recipe: RecipeLike | MergePlan | None = None, *, output: PathLike, adapters: Any = None,
          weights: Any = None, method: Any = None, space: Any = None, rank: Any = None,
          parameters: Mapping[str, Any] | None = None, calibration: Mapping[str, Any] | None = None,
          calibration_size: int = DEFAULT_SIZE, prompt_format: Any = "cloze", base: Optional[str] = None,
          export: Any = None, export_base: PathLike | None = None, force: bool = False, device: str = "cpu",
          progress: Progress = False, log: Callable[[str], None] = _log, command: str = "tiesmerge.merge()",
          **params: Any) -> driver.MergeResult:
    """Merge PEFT LoRA / RSLoRA adapters into one adapter folder, exactly in ΔW space (or core space).

    Give a recipe (a YAML path — tiesmerge's or mergekit's —, a `Recipe`, a mapping, or a `plan_merge` result), or
    the adapters and the method as keyword arguments; keyword arguments override the recipe. Method parameters go in
    `parameters=` or as keywords (`density=0.2`, `lam=1.0` for λ, `sign="count"`). Calibrated methods read
    `calibration=` (adapter name → prompts) and collect missing statistics on `base=`. `export="vllm"|"gguf"|"model"`
    also exports the merge (to OUTPUT-vllm/, OUTPUT.gguf, OUTPUT-model/; gguf and model read `export_base`), checked
    before the merge runs. Writes `output` atomically; no input (adapter, base, recipe, calibration or statistics
    file) may be or lie inside it. Returns a MergeResult: `.output`, `.modules` (one report per module), `.summary`,
    `.export` (the export's result, if asked). Errors are typed (tiesmerge.BadInputError), never SystemExit.

    Example:

        >>> import tiesmerge
        >>> result = tiesmerge.merge(adapters={"math": "./math", "code": "./code"}, method="ties",
        ...                          density=0.2, rank=64, output="merged/")
        >>> result.summary["retained_energy_mean"]
    """
    from tiesmerge.api.exporting import plan_export, run_plan
    from tiesmerge.atomic import check_output_dir, refuse_overlap

    if isinstance(recipe, MergePlan):
        plan = recipe
    else:
        plan = plan_merge(recipe, adapters=adapters, weights=weights, method=method, space=space, rank=rank,
                          parameters=parameters, calibration=calibration, calibration_size=calibration_size,
                          prompt_format=prompt_format, base=base, device=device, log=log, **params)
    output = Path(output)
    planned = plan_export(export, export_base, output, force, plan.job, log=log) if export else None
    check_output_dir(output, force)  # the folder's own checks first (the current folder, a file, permissions)
    refuse_overlap(output, protected_inputs(plan.source, plan.recipe, plan.calibration, None, plan.base),
                   "write the merge to a separate directory")
    with _hook(progress, len(plan.job.plan.modules), "merging") as hook:
        result = driver.run(plan.job, output, force=force, device=resolve_device(device), progress=hook,
                            command=command)
    if planned is not None:
        result = dataclasses.replace(result, export=run_plan(result.output, planned, log=log))
    return result


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
