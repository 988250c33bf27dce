"""Question files: JSONL {question, choices, answer, domain?}, MMLU-style CSV, and the tournament JSON list.

A bad row fails the load with its line (JSONL, CSV) or item number (JSON) unless skip_invalid,
which skips it and counts it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.eval.questions import InvalidQuestion, Question, make_question
from tiesmerge.portable import limits
from tiesmerge.portable.errors import AgentInputError
from tiesmerge.portable.limits import read_question_list


@dataclass
class LoadResult:
    questions: list[Question]
    skipped: list[str] = field(default_factory=list)  # "file:line: reason"


def _fail_or_skip(result: LoadResult, where: str, reason: str, skip_invalid: bool) -> None:
    if not skip_invalid:
        raise BadInputError(f"{where}: {reason} (fix the row, or pass --skip-invalid to skip bad rows)")
    result.skipped.append(f"{where}: {reason}")


def load_jsonl(path: Path, domain: str | None = None, skip_invalid: bool = False) -> LoadResult:
    result = LoadResult([])
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = limits.loads_json(line, where)
                if not isinstance(row, dict):
                    raise InvalidQuestion("a line must hold a JSON object")
                result.questions.append(make_question(row.get("question"), row.get("choices"), row.get("answer"),
                                                      domain or row.get("domain"), row.get("id")))
            except AgentInputError as exc:
                _fail_or_skip(result, where, str(exc).removeprefix(where + " "), skip_invalid)
            except InvalidQuestion as exc:
                _fail_or_skip(result, where, str(exc), skip_invalid)
    return result


def load_csv(path: Path, domain: str | None = None, skip_invalid: bool = False) -> LoadResult:
    """MMLU-style: question,A,B,C,D,answer — with or without a header row (an optional 7th column is the domain)."""
    result = LoadResult([])
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    start = 1 if rows and [c.strip().lower() for c in rows[0][:6]] == ["question", "a", "b", "c", "d", "answer"] else 0
    for n, row in enumerate(rows[start:], start + 1):
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{n}"
        if len(row) < 6:
            _fail_or_skip(result, where, f"expected 6 columns question,A,B,C,D,answer, got {len(row)}", skip_invalid)
            continue
        try:
            row_domain = domain or (row[6] if len(row) > 6 else None)
            result.questions.append(make_question(row[0], row[1:5], row[5], row_domain))
        except InvalidQuestion as exc:
            _fail_or_skip(result, where, str(exc), skip_invalid)
    return result


def load_tournament(path: Path, domain: str | None = None, skip_invalid: bool = False) -> LoadResult:
    """The tournament's list of {topic?, question, choices: ["A) …"] | {"A": …}, answer, explanation?}."""
    result = LoadResult([])
    data = as_bad_input(read_question_list)(Path(path), "question file")
    for n, row in enumerate(data, 1):
        where = f"{path}: item {n}"
        try:
            if not isinstance(row, dict):
                raise InvalidQuestion("an item must be a JSON object")
            result.questions.append(make_question(row.get("question"), row.get("choices"), row.get("answer"),
                                                  domain or row.get("domain") or row.get("topic"), row.get("id")))
        except InvalidQuestion as exc:
            _fail_or_skip(result, where, str(exc), skip_invalid)
    return result


LOADERS = {".jsonl": load_jsonl, ".csv": load_csv, ".json": load_tournament}


def load_questions(path: Path, domain: str | None = None, skip_invalid: bool = False) -> LoadResult:
    """Load a question file by its extension (.jsonl, .csv, .json)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"question file {path} not found")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise BadInputError(f"{path}: unknown question format {path.suffix!r}; use .jsonl, .csv (MMLU style) or .json (tournament list)")
    if path.stat().st_size > limits.MAX_BYTES:
        raise BadInputError(f"question file {path} is over the {limits.MAX_BYTES >> 20} MiB limit; split it")
    try:
        result = loader(path, domain, skip_invalid)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not result.questions:
        raise BadInputError(f"{path}: no valid questions")
    refuse_duplicate_ids(result.questions, str(path))
    return result


def refuse_duplicate_ids(questions, where: str) -> None:
    """Predictions, caches and paired comparisons are keyed by question id: two questions with one id would
    silently overwrite each other (an id absent from a row is derived from its text, so a repeated row repeats it)."""
    seen: dict[str, int] = {}
    for q in questions:
        seen[q.id] = seen.get(q.id, 0) + 1
    dupes = [i for i, n in seen.items() if n > 1]
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:3]) + (" …" if len(dupes) > 3 else "")
        raise BadInputError(f"{where}: {len(dupes)} question id(s) occur more than once ({shown}); give every row "
                            "a unique id (or remove the repeated rows)")
