"""Evaluate the base, specialists and merged adapters on one set of questions, loading the base once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiesmerge.choices import Choice
from tiesmerge.errors import BadInputError
from tiesmerge.eval.cloze import ClozeNorm, score_cloze
from tiesmerge.eval.loaders import load_questions, refuse_duplicate_ids
from tiesmerge.eval.models import attach_adapters, using
from tiesmerge.eval.questions import Question
from tiesmerge.eval.report import EvalResult, Target, specialists
from tiesmerge.eval.scoring import score_generate, score_letters


class EvalMode(Choice):
    letters = "letters"  # log-likelihood of A–D after the options
    cloze = "cloze"  # likelihood of each choice's text as the answer; options not shown
    generate = "generate"  # greedy generation, a letter parsed


SCORERS = {EvalMode.letters: score_letters, EvalMode.cloze: score_cloze, EvalMode.generate: score_generate}


def collect_questions(data: Sequence[tuple[str | None, Path]], *, builtin: bool, split: str, limit: int | None,
                      skip_invalid: bool, seed: int = 0, n_per_domain: int = 1000) -> tuple[list[Question], list[str]]:
    """Questions from files (`domain` overrides the rows') and/or the built-in sets; `limit` per domain."""
    questions: list[Question] = []
    skipped: list[str] = []
    for domain, path in data:
        loaded = load_questions(path, domain, skip_invalid)
        questions += loaded.questions
        skipped += loaded.skipped
    if builtin:
        from tiesmerge.eval.builtin.build import SPLITS, build

        if split not in SPLITS:
            raise BadInputError(f"--split {split!r} is unknown; use train, validation or test")
        for qs in build(n_per_domain, seed)[split].values():
            questions += qs
    if not questions:
        raise BadInputError("no questions: pass --data DOMAIN=FILE or --builtin")
    refuse_duplicate_ids(questions, "the questions of all --data files together")
    if limit is not None:
        per: dict[str, int] = {}
        kept = []
        for q in questions:
            per[q.domain] = per.get(q.domain, 0) + 1
            if per[q.domain] <= limit:
                kept.append(q)
        questions = kept
    return questions, skipped


def evaluate(model, tokenizer, questions: Sequence[Question], *, adapters: Mapping[str, Path] = {},
             merged: Mapping[str, Path] = {}, mode: EvalMode = EvalMode.letters, batch_size: int = 16, include_base: bool = True,
             explicit_specialists: Mapping[str, str] = {},
             on_target: Callable[[str, int], Callable[[int], None] | None] | None = None,
             cloze_norm: ClozeNorm = ClozeNorm.token) -> EvalResult:
    """Score every target on the same questions; adapters are attached once and switched."""
    clash = (set(adapters) & set(merged)) | ({"base"} & (set(adapters) | set(merged)))
    if clash:
        raise BadInputError(f"adapter names must be unique and not 'base'; rename: {', '.join(sorted(clash))}")
    mode = EvalMode.parse(mode, "--mode")
    cloze_norm = ClozeNorm.parse(cloze_norm, "--cloze-norm")
    scorer = SCORERS[mode]
    if mode is EvalMode.cloze:
        scorer = functools.partial(score_cloze, norm=cloze_norm)
    peft = attach_adapters(model, {**adapters, **merged})
    targets = ([Target("base", "base")] if include_base else []) + \
        [Target(n, "adapter", str(p)) for n, p in adapters.items()] + [Target(n, "merged", str(p)) for n, p in merged.items()]
    domains = sorted({q.domain for q in questions})
    for name, domain in explicit_specialists.items():
        if name not in adapters:
            raise BadInputError(f"--specialist {name}={domain}: no adapter named {name!r} (give it with --adapter)")
        if domain not in domains:
            raise BadInputError(f"--specialist {name}={domain}: no questions of domain {domain!r}")
    predictions = {}
    for target in targets:
        progress = on_target(target.name, len(questions)) if on_target else None
        with using(peft, model, None if target.kind == "base" else target.name) as m:
            predictions[target.name] = scorer(m, tokenizer, questions, batch_size=batch_size, progress=progress)
    return EvalResult(targets, domains, predictions, specialists(list(adapters), domains, explicit_specialists),
                      meta={"mode": mode.value, "n_questions": len(questions), "batch_size": batch_size,
                            **({"cloze_norm": cloze_norm.value} if mode is EvalMode.cloze else {})})
