"""`tiesmerge.evaluate`: per-domain accuracy of the base, specialists and merged adapters on one loaded base, and
`tiesmerge.export_lm_eval` (the same questions as lm-evaluation-harness tasks). The CLI's `eval` and
`data export-lm-eval` call these."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from tiesmerge.adapters import hub
from tiesmerge.atomic import atomic_output_dir, check_output_dir, refuse_overlap
from tiesmerge.errors import BadInputError
from tiesmerge.extras import Extra, require

PathLike = Union[str, Path]
DataArg = Union[PathLike, tuple[Optional[str], PathLike]]


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


def _files(data: Sequence[DataArg] | Mapping[str, PathLike] | None) -> list[tuple[Optional[str], Path]]:
    """Question files: a mapping domain → file, or a list of files / (domain, file) pairs."""
    if data is None:
        return []
    if isinstance(data, (str, bytes, Path)):
        raise TypeError(f"data must be a list of question files (or a mapping domain → file), not {data!r}")
    if isinstance(data, Mapping):
        return [(d, Path(p)) for d, p in data.items()]
    out = []
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            out.append((item[0], Path(item[1])))
        else:
            out.append((None, Path(item)))
    return out


def _named(adapters: Mapping[str, PathLike] | None, log) -> dict[str, Path]:
    if adapters is None:
        return {}
    if not isinstance(adapters, Mapping):
        raise TypeError(f"adapters must be a mapping name → folder, not {type(adapters).__name__}")
    return {k: hub.resolve(str(v), f"adapter {k!r}", log=log) for k, v in adapters.items()}


def evaluate(base: str, *, adapters: Mapping[str, PathLike] | None = None,
             merged: Mapping[str, PathLike] | None = None, data: Any = None, builtin: bool = False,
             split: str = "test", n_per_domain: int = 1000, limit: Optional[int] = None, batch_size: int = 16,
             mode: Any = "letters", cloze_norm: Any = "token", specialists: Mapping[str, str] | None = None,
             include_base: bool = True, dtype: str = "auto", device: str = "auto", load_in_4bit: bool = False,
             skip_invalid: bool = False, out: Optional[PathLike] = None, force: bool = False,
             on_target: Optional[Callable[[str, int], Optional[Callable[[int], None]]]] = None,
             log: Callable[[str], None] = _log):
    """Score the base, each adapter and each merged adapter per domain on the same questions (the base loaded once).
    `data`: question files (.jsonl/.csv/.json; a mapping domain → file, or a list), and/or `builtin=True` (the
    verified built-in sets). `out`: also write results.json, results.csv, predictions.jsonl there (atomically).
    Returns an EvalResult (`.cell(model, domain)`, `.mean(model)`, `.merged_summary(name)`, …).

    Example:

        >>> r = tiesmerge.evaluate("smollm2", adapters={"math": "./math"}, merged={"ties": "./merged"},
        ...                        builtin=True, limit=50)
        >>> r.mean("ties")
    """
    require(Extra.eval, "tiesmerge eval")
    from tiesmerge.eval.cloze import ClozeNorm
    from tiesmerge.eval.models import check_adapters_fit, load_base
    from tiesmerge.eval.report import write_outputs
    from tiesmerge.eval.run import EvalMode, collect_questions
    from tiesmerge.eval.run import evaluate as score

    mode = EvalMode.parse(getattr(mode, "value", mode), "--mode")
    norm = ClozeNorm.parse(getattr(cloze_norm, "value", cloze_norm), "--cloze-norm")
    if norm is not ClozeNorm.token and mode is not EvalMode.cloze:
        raise BadInputError(f"--cloze-norm {norm.value} applies to --mode cloze only")
    out = Path(out) if out is not None else None
    if out is not None:
        check_output_dir(out, force)  # before the evaluation, not after
    adapter_map, merged_map = _named(adapters, log), _named(merged, log)
    files = _files(data)
    questions, skipped = collect_questions(files, builtin=builtin, split=split, limit=limit,
                                           skip_invalid=skip_invalid, n_per_domain=n_per_domain)
    if skipped:
        log(f"skipped {len(skipped)} invalid row(s); first: {skipped[0]}")
    if out is not None:
        refuse_overlap(out, {f"adapter {k!r}": v for k, v in {**adapter_map, **merged_map}.items()}
                       | {f"question file {p}": p for _, p in files}, "write the results to a separate folder")
    check_adapters_fit(base, {**adapter_map, **merged_map})
    model, tokenizer = load_base(base, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    result = score(model, tokenizer, questions, adapters=adapter_map, merged=merged_map, mode=mode,
                   batch_size=batch_size, include_base=include_base, explicit_specialists=dict(specialists or {}),
                   on_target=on_target, cloze_norm=norm)
    result.meta.update({"base": base, "split": split if builtin else None, "limit": limit,
                        "skipped_rows": len(skipped)})
    if out is not None:
        with atomic_output_dir(out, force) as tmp:
            write_outputs(result, tmp)
    return result


def export_lm_eval(out: PathLike, *, data: Any = None, builtin: bool = False, split: str = "test",
                   n_per_domain: int = 1000, limit: Optional[int] = None, name: str = "tiesmerge",
                   force: bool = False):
    """Write question sets as lm-evaluation-harness tasks (one per domain, and a group NAME), so lm-eval can re-score
    what `evaluate(mode="cloze", cloze_norm="sum"|"chars")` scores. Returns `.tasks`, `.group`, `.questions`."""
    from tiesmerge.eval.lm_eval_task import write_tasks
    from tiesmerge.eval.run import collect_questions

    out = Path(out)
    files = _files(data)
    refuse_overlap(out, {f"question file {p}": p for _, p in files}, "write the tasks to a separate folder")
    questions, _ = collect_questions(files, builtin=builtin, split=split, limit=limit, skip_invalid=False,
                                     n_per_domain=n_per_domain)
    with atomic_output_dir(out, force) as tmp:
        return write_tasks(questions, tmp, out, name)
