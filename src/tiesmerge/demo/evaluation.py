"""Evaluate every demo target on one split, loading the base once and only if some result is not cached.

Each target's predictions are cached under a key of (base, the adapter's content hash, the questions,
the scoring settings), so a cached demo run reads results instead of recomputing them (eval/session.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiesmerge.eval.questions import Question
from tiesmerge.eval.report import EvalResult, Target
from tiesmerge.eval.session import EvalSession
from tiesmerge.progress import ProgressFactory


def evaluate_targets(base: str, targets: Sequence[Target], questions: Sequence[Question],
                     specialist_of: Mapping[str, str], *, mode: str, batch_size: int, progress: ProgressFactory,
                     log: Callable[[str], None], root: Path | None = None,
                     same_as: Mapping[str, str] | None = None, dtype: str = "float32"
                     ) -> tuple[EvalResult, dict[str, bool]]:
    """(the result, target name → whether it came from the cache). `same_as`: target → an earlier target
    whose ΔW it was shown to equal; it takes that target's predictions instead of being scored again."""
    session = EvalSession(base, questions, mode=mode, batch_size=batch_size, progress=progress, log=log, root=root,
                          dtype=dtype)
    same_as = dict(same_as or {})
    predictions, hits = {}, {}
    for t in targets:
        if t.name in same_as:
            source = same_as[t.name]
            if source not in predictions:
                raise ValueError(f"{t.name} reuses {source}'s predictions, which must be scored first")
            predictions[t.name], hits[t.name] = predictions[source], hits[source]
            continue
        predictions[t.name], hits[t.name] = session.predictions(t)
    domains = sorted({q.domain for q in questions})
    result = EvalResult(list(targets), domains, predictions, dict(specialist_of),
                        meta={"mode": mode, "n_questions": len(questions), "batch_size": batch_size, "base": base,
                              "dtype": dtype,
                                "same_as": same_as})
    return result, hits
