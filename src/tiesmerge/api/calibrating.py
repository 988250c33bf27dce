"""`tiesmerge.calibrate` (each adapter's input statistics, for RegMean / RegMean++) and `tiesmerge.refine` (distil the
specialists into a merged LoRA on their own unlabeled prompts), and the statistics a calibrated merge needs
(`with_statistics`). The CLI's `calibrate`, `refine` and `merge --method regmean` call these."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from tiesmerge.api.recipes import RecipeLike, build_recipe
from tiesmerge.atomic import check_output_dir, check_output_file, refuse_overlap, write_file
from tiesmerge.calibration.prompts import DEFAULT_SIZE, PromptFormat, load_calibration, read_prompts
from tiesmerge.errors import BadInputError
from tiesmerge.merge.job import from_hub
from tiesmerge.merge.recipe import Recipe

PathLike = Union[str, Path]
Log = Callable[[str], None]


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


def _sources(calibration: Mapping[str, Any] | None) -> dict[str, str]:
    if calibration is None:
        return {}
    if not isinstance(calibration, Mapping):
        raise TypeError(f"calibration must be a mapping adapter name → prompts file (or builtin:DOMAIN:SPLIT), not "
                        f"{type(calibration).__name__}")
    return {str(k): str(v) for k, v in calibration.items()}


def prompt_sets(spec: Recipe, calibration: Mapping[str, Any] | None, size: int, test: Optional[PathLike]):
    """adapter name → its budgeted prompts (`calibration` overrides the recipe's `calibration:`), checked before
    anything is loaded; prompts that leak a `test` question are refused."""
    sources = {a.name: a.calibration for a in spec.adapters if a.calibration}
    sources.update(_sources(calibration))
    held = [p.text for p in read_prompts(Path(test), "--test file")] if test is not None else []
    return load_calibration(sources, [a.name for a in spec.adapters], size, held, f"--test {test}")


def protected_inputs(recipe: Any, spec: Recipe, calibration: Mapping[str, Any] | None = None,
                     test: Optional[PathLike] = None, base: Optional[str] = None,
                     start: Optional[PathLike] = None,
                     validation: Mapping[str, Any] | None = None) -> dict[str, Optional[Path]]:
    """Every file or folder a command reads — adapters, base, recipe, calibration and test files, statistics, the start
    merge — labelled for the overlap refusal (an output may not be, contain or lie inside any of them)."""
    out: dict[str, Optional[Path]] = {
        "the recipe": Path(recipe) if isinstance(recipe, (str, Path)) else None,
        "the --test file": Path(test) if test is not None else None,
        "the start merge": Path(start) if start is not None else None,
        "the base model": Path(base) if base and Path(base).exists() else None}
    for a in spec.adapters:
        out[f"input adapter {a.name!r}"] = a.path
        out[f"the statistics of {a.name!r}"] = a.statistics
        if a.calibration and not str(a.calibration).startswith("builtin:"):
            out[f"the calibration file of {a.name!r}"] = Path(a.calibration)
    for name, value in _sources(calibration).items():
        if not value.startswith("builtin:"):
            out[f"the calibration file of {name!r}"] = Path(value)
    for name, value in _sources(validation).items():
        if not value.startswith("builtin:"):
            out[f"the validation file of {name!r}"] = Path(value)
    return out


def validation_questions(validation: Mapping[str, Any] | None, names: list[str]) -> list:
    """refine's labelled validation questions, each tagged with its adapter's name as the domain: a question file
    per adapter, or builtin:DOMAIN:validation (a built-in test split is refused: it is for the final evaluation)."""
    import dataclasses

    from tiesmerge.eval.loaders import load_questions
    from tiesmerge.eval.run import collect_questions

    out = []
    for name, source in _sources(validation).items():
        if name not in names:
            raise BadInputError(f"--validation {name}=…: no adapter is named {name!r} ({', '.join(names)})")
        if source.startswith("builtin:"):
            _, domain, split = (source.split(":") + ["", ""])[:3]
            if split in ("test", ""):
                raise BadInputError(f"--validation {name}={source}: use builtin:{domain}:validation — the test split "
                                    "is kept for the final evaluation")
            questions, _ = collect_questions([], builtin=True, split=split, limit=None, skip_invalid=False)
            questions = [q for q in questions if q.domain == domain]
            if not questions:
                raise BadInputError(f"--validation {name}={source}: no built-in {split} questions of domain "
                                    f"{domain!r}")
        else:
            questions = load_questions(Path(source), name).questions
        out += [dataclasses.replace(q, domain=name) for q in questions]
    return out


def with_statistics(spec: Recipe, calibration: Mapping[str, Any] | None = None, *, size: int = DEFAULT_SIZE,
                    prompt_format: Any = PromptFormat.cloze, base: str | None = None, device: str = "auto",
                    log: Log = _log) -> Recipe:
    """The recipe with `statistics:` filled from the cache for adapters that have calibration prompts (a calibrated
    merge). With a `base`, statistics not cached yet are collected first (calibrate's work, one call); without one
    they are refused with the command that makes them."""
    from tiesmerge.calibration.statistics import cached_base, statistics_path
    from tiesmerge.merge.registry import get as get_method

    if all(a.statistics is not None for a in spec.adapters):
        return spec
    fmt = PromptFormat.parse(getattr(prompt_format, "value", prompt_format), "--prompt-format")
    prompts = prompt_sets(spec, calibration, size, None)
    pp = get_method(spec.method).statistics.inputs == "merged"
    paths = {a.name: a.statistics or statistics_path(a.path, prompts[a.name], fmt) for a in spec.adapters}
    missing = [a.name for a in spec.adapters if a.statistics is None
               and not (Path(paths[a.name]).is_file() and (base is None or cached_base(paths[a.name]) == base))]
    todo = [a.name for a in spec.adapters if a.statistics is None]
    if todo and base is not None:
        from tiesmerge.eval.models import load_base

        model, tok = load_base(base, device=device)
        if pp:
            from tiesmerge.merge.methods.regmean import OFF_DIAGONAL

            paths.update(_pp_statistics(model, tok, base, spec, prompts, fmt, spec.parameters.get(OFF_DIAGONAL),
                                        spec.parameters.lam, log))
        else:  # calibrate's cache decides what is reused (same base, dtype, quantization)
            from tiesmerge.calibration.statistics import calibrate as collect

            if missing:
                log(f"statistics of {', '.join(missing)} not cached: collecting them on {base}")
            paths.update(collect(model, tok, base, {a.name: a.path for a in spec.adapters if a.name in todo},
                                 {n: prompts[n] for n in todo}, fmt, log=log))
    elif missing or pp:
        what = ("no RegMean++ statistics given" if pp else
                f"no statistics of adapter {missing[0]!r} for these prompts")
        raise BadInputError(f"{what}: give --base BASE to collect them in this command, or run `tiesmerge calibrate"
                            f"{' --pp' if pp else ''}` with the same adapters and --calibration first")
    adapters = [a.model_copy(update={"statistics": Path(paths[a.name])}) for a in spec.adapters]
    return spec.model_copy(update={"adapters": adapters})


def _pp_statistics(model, tok, base, spec: Recipe, prompts, fmt, off_diagonal: float, lam: float, log: Log):
    """RegMean++ statistics in the cache, keyed by everything they depend on."""
    from tiesmerge.cache import adapter_digest, cache_dir, cache_key
    from tiesmerge.calibration.prompts import prompts_digest
    from tiesmerge.calibration.regmean_pp import collect_pp
    from tiesmerge.calibration.statistics import collection_setup

    weights = {a.name: a.weight for a in spec.adapters}
    key = cache_key("regmean-pp", 2, base, collection_setup(model), off_diagonal, lam, weights,
                    [(a.name, adapter_digest(a.path), prompts_digest(prompts[a.name], fmt)) for a in spec.adapters])
    folder = cache_dir() / "statistics-pp" / key
    files = {a.name: folder / f"{a.name}.regmean_pp.safetensors" for a in spec.adapters}
    if all(f.is_file() for f in files.values()):
        log(f"RegMean++ statistics cached ({folder})")
        return files
    return collect_pp(model, tok, base, {a.name: a.path for a in spec.adapters}, prompts, fmt,
                      {"off_diagonal": off_diagonal, "lambda": lam, "weights": weights}, folder, log=log)


def _check_pp(lam: float, off_diagonal: float, load_in_4bit: bool) -> None:
    """RegMean++'s λ and a: the same checks as a recipe's parameters (finite, in range)."""
    from tiesmerge.merge.methods.regmean import OFF_DIAGONAL
    from tiesmerge.merge.params import LAMBDA

    for definition, value, flag in ((LAMBDA, lam, "--lambda"), (OFF_DIAGONAL, off_diagonal, "--off-diagonal")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{flag}: expected a number, got {value!r}")
        try:
            definition.check(value)
        except ValueError as exc:
            raise BadInputError(f"{flag} {value}: {exc}") from None
    if lam == 0:
        raise BadInputError("--lambda 0: the merged ΔW would be 0 in every block; set --lambda (1 is the usual value)")
    if load_in_4bit:
        raise BadInputError("--pp folds each merged block into the base's weights: it needs an unquantized base "
                            "(drop --4bit)")


@dataclass(frozen=True)
class Calibration:
    """`files`: adapter name → its statistics file (cached); `recipe`: the recipe written with them, if asked."""

    files: dict[str, Path]
    recipe: Optional[Path] = None


def calibrate(recipe: RecipeLike | None = None, *, base: str, adapters: Any = None,
              calibration: Mapping[str, Any] | None = None, size: int = DEFAULT_SIZE,
              prompt_format: Any = PromptFormat.cloze, test: Optional[PathLike] = None,
              write_recipe: Optional[PathLike] = None, device: str = "auto", dtype: str = "auto",
              load_in_4bit: bool = False, pp: bool = False, off_diagonal: float = 1.0, lam: float = 1.0,
              allow_base_mismatch: bool = False, log: Log = _log) -> Calibration:
    """Collect each adapter's input statistics (RegMean's Gram matrices; RegMean++'s with `pp=True`) on its own
    prompts, cached so later merges need no base. `calibration`: adapter name → prompts file or builtin:DOMAIN:SPLIT
    (answers never read). `write_recipe`: also write the recipe with each adapter's `statistics:` filled in.

    Example:

        >>> tiesmerge.calibrate(base="smollm2", adapters={"math": "./math", "code": "./code"},
        ...                     calibration={"math": "builtin:math:train", "code": "builtin:code:train"}).files
    """
    from tiesmerge.adapters.compat import plan_set
    from tiesmerge.adapters.reader import AdapterReader

    fmt = PromptFormat.parse(getattr(prompt_format, "value", prompt_format), "--prompt-format")
    spec = from_hub(build_recipe(recipe, adapters=adapters, allow_base_mismatch=allow_base_mismatch or None), log)
    plan_set([AdapterReader(a.path, a.name) for a in spec.adapters], spec.base_model, spec.allow_base_mismatch)
    prompts = prompt_sets(spec, calibration, size, test)
    if write_recipe is not None:  # checked before any statistics are computed
        write_recipe = check_output_file(Path(write_recipe), "--write-recipe",
                                         protected_inputs(recipe, spec, calibration, test, base))
    if pp:
        _check_pp(lam, off_diagonal, load_in_4bit)
    from tiesmerge.eval.models import load_base

    model, tok = load_base(base, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    if pp:
        files = _pp_statistics(model, tok, base, spec, prompts, fmt, off_diagonal, lam, log)
    else:
        from tiesmerge.calibration.statistics import calibrate as collect

        files = collect(model, tok, base, {a.name: a.path for a in spec.adapters}, prompts, fmt, log=log)
    if write_recipe is None:
        return Calibration(dict(files))
    import yaml

    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    if pp:
        data["method"], data["parameters"] = "regmean_pp", {"off_diagonal": off_diagonal, "lambda": lam}
    elif "method" not in spec.model_fields_set:
        data["method"], data["parameters"] = "regmean", {}
    for entry in data["adapters"]:
        entry["statistics"] = str(files[entry["name"]])
    refuse_overlap(write_recipe, {f"the statistics of {n!r}": p for n, p in files.items()},
                   "give --write-recipe a new file name")
    write_file(write_recipe, yaml.safe_dump(data, sort_keys=False))
    return Calibration(dict(files), write_recipe)


@dataclass(frozen=True)
class Refined:
    """`output`: the refined adapter; `report`: refine_report.json's content; `lines`: the agreement table."""

    output: Path
    report: dict
    lines: list[str]


def refine(recipe: RecipeLike | None = None, *, output: PathLike, base: str,
           start: PathLike | Sequence[PathLike] | None = None,
           adapters: Any = None, calibration: Mapping[str, Any] | None = None, size: int = DEFAULT_SIZE,
           test: Optional[PathLike] = None, restart: bool = False, force: bool = False, device: str = "auto",
           dtype: str = "auto", load_in_4bit: bool = False, allow_base_mismatch: bool = False,
           validation: Mapping[str, Any] | None = None, log: Log = _log,
           progress: Optional[Callable[[int, int, str], None]] = None, command: str = "tiesmerge.refine()",
           **settings: Any) -> Refined:
    """Refine a merged LoRA: train it to reproduce each specialist on that specialist's own unlabeled prompts.
    `start`: the merge to refine (default: the recipe merged as written; Iso-C, core space, rank Σ r when the
    adapters come from `adapters=`) — or several candidates (e.g. your TIES, task-arithmetic and Iso-C merges): each
    is scored on the held-out prompts against its teachers before training and the closest is refined (the report's
    `start_choice`). `validation`: adapter name → labelled questions you hold back (a file, or
    builtin:DOMAIN:validation) — then the state kept is the one with the best validation accuracy, and the start
    when none beats it. `settings`: steps, batch_size, lr, tokens, target (greedy, kl, kl_all, options), prompt_format,
    heldout, eval_every, patience, seed, keep, normalize, autocast (tiesmerge.train.refine_settings.RefineSettings).
    Resumes an interrupted run's checkpoint.

    Example:

        >>> tiesmerge.refine(start="merged/", base="smollm2", adapters={"math": "./math", "code": "./code"},
        ...                  calibration={"math": "builtin:math:train", "code": "builtin:code:train"},
        ...                  output="refined/").report["final"]
    """
    from tiesmerge.adapters.compat import check_base
    from tiesmerge.adapters.reader import AdapterReader
    from tiesmerge.train.refine_job import run_refine, starts_of
    from tiesmerge.train.refine_settings import RefineSettings, RefineTarget

    known = set(RefineSettings.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"refine() got unknown setting(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
    if "target" in settings:
        settings["target"] = RefineTarget.parse(getattr(settings["target"], "value", settings["target"]), "--target")
    if "prompt_format" in settings:
        settings["prompt_format"] = PromptFormat.parse(getattr(settings["prompt_format"], "value",
                                                               settings["prompt_format"]), "--prompt-format")
    run_settings = RefineSettings(**settings)
    run_settings.check()
    defaults = {} if recipe is not None else {"method": "iso_c", "space": "core", "rank": "full"}
    spec = from_hub(build_recipe(recipe, adapters=adapters, allow_base_mismatch=allow_base_mismatch or None,
                                 **{k: v for k, v in defaults.items() if k != "rank"},
                                 output={"rank": defaults["rank"]} if defaults else None), log)
    prompts = prompt_sets(spec, calibration, size, test)
    held_back = validation_questions(validation, [a.name for a in spec.adapters])
    starts = starts_of(start)
    for s in starts:
        if not (s / "adapter_config.json").is_file():
            raise BadInputError(f"--start {s}: no adapter_config.json (give a merged adapter's folder)")
    if len({s.resolve() for s in starts}) != len(starts):
        raise BadInputError("--start names the same merge twice; give each candidate start once")
    readers = [AdapterReader(a.path, a.name) for a in spec.adapters]  # the start on the specialists' base, as merge
    check_base(readers + [AdapterReader(s, "--start") for s in starts], spec.base_model, spec.allow_base_mismatch)
    out = check_output_dir(Path(output), force)
    protected = protected_inputs(recipe, spec, calibration, test, base, None, validation)
    protected.update({"the start merge" if len(starts) == 1 else f"start candidate {i + 1}": s
                      for i, s in enumerate(starts)})
    refuse_overlap(out, protected, "write the refined adapter elsewhere")
    result = run_refine(spec, prompts, run_settings, base=base, start=starts or None, output=out, force=force,
                        restart=restart, device=device, dtype=dtype, load_in_4bit=load_in_4bit, log=log,
                        progress=progress, command=command, validation=held_back)
    return Refined(Path(output), result["report"], result["lines"])
