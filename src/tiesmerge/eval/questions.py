"""The one question shape every loader and generator produces."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

LETTERS = ("A", "B", "C", "D")


class InvalidQuestion(ValueError):
    """A row that is not a valid four-option question (the message says what is wrong)."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"
    domain: str = "default"
    meta: dict | None = field(default=None, compare=False, hash=False)  # how a built-in answer was verified

    @property
    def answer_index(self) -> int:
        return LETTERS.index(self.answer)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["choices"] = list(self.choices)
        if d["meta"] is None:
            d.pop("meta")
        return d


def question_id(text: str, choices: tuple[str, ...]) -> str:
    return hashlib.sha1(("\x1f".join((text, *choices))).encode()).hexdigest()[:12]


def make_question(text: object, choices: object, answer: object, domain: object = None, qid: object = None) -> Question:
    """Validate and normalise one question; raise InvalidQuestion naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidQuestion("missing or empty question text")
    if isinstance(choices, dict):
        keys = sorted(str(k).strip().upper() for k in choices)
        if keys != list(LETTERS):
            raise InvalidQuestion(f"choices dict must have keys A, B, C, D (got {sorted(choices)})")
        choices = [choices[k] if k in choices else choices[k.lower()] for k in LETTERS]
    if not isinstance(choices, (list, tuple)) or len(choices) != 4:
        raise InvalidQuestion(f"need exactly 4 choices, got {len(choices) if isinstance(choices, (list, tuple)) else type(choices).__name__}")
    clean = []
    for letter, choice in zip(LETTERS, choices):
        if not isinstance(choice, (str, int, float)) or isinstance(choice, bool):
            raise InvalidQuestion(f"choice {letter} is not text")
        c = str(choice).strip()
        for prefix in (f"{letter})", f"{letter}.", f"{letter}:", f"({letter})"):  # tournament style "A) …"
            if c.upper().startswith(prefix):
                c = c[len(prefix):].strip()
                break
        if not c:
            raise InvalidQuestion(f"choice {letter} is empty")
        clean.append(c)
    if len(set(clean)) != 4:
        raise InvalidQuestion("choices are not distinct")
    letter = str(answer).strip().upper() if answer is not None else ""
    if letter.startswith("(") and letter.endswith(")"):
        letter = letter[1:-1]
    letter = letter.rstrip(").:")
    if letter not in LETTERS:
        raise InvalidQuestion(f"answer must be one of A, B, C, D (got {answer!r})")
    text = text.strip()
    tup = tuple(clean)
    dom = str(domain).strip() if domain not in (None, "") else "default"
    return Question(id=str(qid) if qid not in (None, "") else question_id(text, tup), question=text, choices=tup,
                    answer=letter, domain=dom)
