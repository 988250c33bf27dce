"""Evaluate every demo target on one split, loading the base once and only if some result is not cached.

Each target's predictions are cached under a key of (base, the adapter's content hash, the questions,
the scoring settings), so a cached demo run reads results instead of recomputing them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiesmerge.demo.cache import adapter_digest, read_json, write_json
from tiesmerge.demo.progress import ProgressFactory
from tiesmerge.demo.config import cache_key
from tiesmerge.eval.questions import Question
from tiesmerge.eval.report import EvalResult, Target
from tiesmerge.eval.run import SCORERS
from tiesmerge.eval.scoring import Prediction

EVAL_VERSION = 1


def questions_digest(questions: Sequence[Question]) -> str:
    h = hashlib.sha256()
    for q in questions:
        h.update(json.dumps([q.id, q.domain, q.question, list(q.choices), q.answer]).encode())
    return h.hexdigest()[:16]


def _to_rows(preds: Sequence[Prediction]) -> list[list]:
    return [[p.question_id, p.domain, p.predicted, p.gold, list(p.logprobs) if p.logprobs else None, p.latency_s]
            for p in preds]


def _from_rows(rows: Sequence[Sequence]) -> list[Prediction]:
    return [Prediction(r[0], r[1], r[2], r[3], tuple(r[4]) if r[4] else None, r[5]) for r in rows]


def evaluate_targets(base: str, targets: Sequence[Target], questions: Sequence[Question],
                     specialist_of: Mapping[str, str], *, mode: str, batch_size: int, progress: ProgressFactory,
                     log: Callable[[str], None], root: Path | None = None) -> tuple[EvalResult, dict[str, bool]]:
    """(the result, target name → whether it came from the cache)."""
    qkey = questions_digest(questions)
    keys = {t.name: cache_key("eval", EVAL_VERSION, base, adapter_digest(Path(t.path)) if t.path else None,
                              qkey, mode, batch_size) for t in targets}
    predictions: dict[str, list[Prediction]] = {}
    hits: dict[str, bool] = {}
    for t in targets:
        rows = read_json("evals", t.name, keys[t.name], root)
        if rows is not None and len(rows) == len(questions):
            predictions[t.name], hits[t.name] = _from_rows(rows), True
    todo = [t for t in targets if t.name not in predictions]
    score = SCORERS[mode]
    if todo:
        from tiesmerge.eval.models import attach_adapters, fused, load_base

        model, tokenizer = load_base(base, dtype="float32", device="auto")
        peft = attach_adapters(model, {t.name: Path(t.path) for t in todo if t.path})
        for t in todo:
            with progress(len(questions), f"scoring {t.name}", "questions") as hook:
                done = [0]

                def advance(n: int) -> None:
                    done[0] += n
                    hook(done[0], len(questions), "")

                if t.path is None:
                    if peft is None:
                        preds = score(model, tokenizer, questions, batch_size=batch_size, progress=advance)
                    else:
                        with peft.disable_adapter():
                            preds = score(peft, tokenizer, questions, batch_size=batch_size, progress=advance)
                else:
                    with fused(peft, t.name) as m:
                        preds = score(m, tokenizer, questions, batch_size=batch_size, progress=advance)
            predictions[t.name], hits[t.name] = preds, False
            write_json("evals", t.name, keys[t.name], _to_rows(preds), root)
    domains = sorted({q.domain for q in questions})
    result = EvalResult(list(targets), domains, {t.name: predictions[t.name] for t in targets}, dict(specialist_of),
                        meta={"mode": mode, "n_questions": len(questions), "batch_size": batch_size, "base": base})
    return result, hits
