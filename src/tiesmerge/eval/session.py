"""Score targets one at a time on a fixed question set: the base is loaded once (lazily, only if some
result is not cached), adapters are switched in and out, and predictions are cached under a key of
(base, the adapter's content hash, the questions, the scoring settings)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from tiesmerge.cache import adapter_digest, cache_key, read_json, write_json
from tiesmerge.eval.questions import Question
from tiesmerge.eval.report import Target
from tiesmerge.eval.scoring import Prediction
from tiesmerge.progress import ProgressFactory

EVAL_VERSION = 2


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


def _no_progress(total: int, label: str, unit: str):
    import contextlib

    return contextlib.nullcontext(lambda done, total, name: None)


class EvalSession:
    def __init__(self, base: str, questions: Sequence[Question], *, mode: str, batch_size: int,
                 progress: ProgressFactory | None = None, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                 root: Path | None = None, dtype: str = "float32"):
        self.base, self.questions, self.mode, self.batch_size = base, list(questions), mode, batch_size
        self.dtype = dtype  # the base's dtype while scoring (bfloat16: 4.7× faster here, AVX-512 BF16)
        self.progress = progress or _no_progress
        self.log, self.root = log, root
        self.qkey = questions_digest(self.questions)
        self._model = self._tokenizer = self._peft = None
        self._loaded: str | None = None  # the adapter name currently loaded in the PeftModel

    def key(self, target: Target) -> str:
        digest = adapter_digest(Path(target.path)) if target.path else None
        extra = () if self.dtype == "float32" else (self.dtype,)  # float32 entries keep their keys
        return cache_key("eval", EVAL_VERSION, self.base, digest, self.qkey, self.mode, self.batch_size, *extra)

    def predictions(self, target: Target) -> tuple[list[Prediction], bool]:
        """(predictions, whether they came from the cache)."""
        key = self.key(target)  # hashes the adapter's files once per call
        rows = read_json("evals", target.name, key, self.root)
        if rows is not None and len(rows) == len(self.questions):
            return _from_rows(rows), True
        preds = self._score(target)
        write_json("evals", target.name, key, _to_rows(preds), self.root)
        return preds, False

    def _score(self, target: Target) -> list[Prediction]:
        from tiesmerge.eval.models import fused, load_base, unfrozen
        from tiesmerge.eval.run import SCORERS

        if self._model is None:
            self._model, self._tokenizer = load_base(self.base, dtype=self.dtype, device="auto")
        score = SCORERS[self.mode]
        with self.progress(len(self.questions), f"scoring {target.name}", "questions") as hook:
            done = [0]

            def advance(n: int) -> None:
                done[0] += n
                hook(done[0], len(self.questions), "")

            kw = dict(batch_size=self.batch_size, progress=advance)
            if target.path is None:
                if self._peft is None:
                    return score(self._model, self._tokenizer, self.questions, **kw)
                with self._peft.disable_adapter(), unfrozen(self._peft):
                    return score(self._peft, self._tokenizer, self.questions, **kw)
            name = self._switch(target)
            with fused(self._peft, name) as m, unfrozen(m):
                return score(m, self._tokenizer, self.questions, **kw)

    def _switch(self, target: Target) -> str:
        """Load the target's adapter into the PeftModel, dropping the previous one (memory stays flat)."""
        from peft import PeftModel

        name = f"t{abs(hash((target.name, target.path))) % 10**8}"
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, target.path, adapter_name=name)
        else:
            self._peft.load_adapter(target.path, adapter_name=name)
            if self._loaded and self._loaded != name:
                self._peft.set_adapter(name)
                self._peft.delete_adapter(self._loaded)
        self._peft.eval()
        self._loaded = name
        return name
