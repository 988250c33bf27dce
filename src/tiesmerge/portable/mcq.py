"""Four-option questions and the prompt that asks for their letter: the one question shape every loader and
generator produces, and the prompt both `tiesmerge eval` and the deployed answer agent score (portable)."""

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


def _answer_letter(answer: object, choices: list[str]) -> str | None:
    """A–D from "B", "b", "(B)", "B)", an integer index 0–3 (as in MMLU), or the text of a choice."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        return LETTERS[answer] if 0 <= answer < 4 else None
    if not isinstance(answer, str):
        return None
    text = answer.strip()
    letter = text.upper().strip("()").rstrip(").:").strip()
    if letter in LETTERS:
        return letter
    if text in choices and choices.count(text) == 1:
        return LETTERS[choices.index(text)]
    return None


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
        got = len(choices) if isinstance(choices, (list, tuple)) else type(choices).__name__
        raise InvalidQuestion(f"need exactly 4 choices, got {got}")
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
    letter = _answer_letter(answer, clean)
    if letter is None:
        raise InvalidQuestion(f"answer must be one of A, B, C, D, an index 0-3, or a choice's text (got {answer!r})")
    if qid is not None and (isinstance(qid, bool) or not isinstance(qid, (str, int))):
        raise InvalidQuestion(f"id must be a string or an integer, got {type(qid).__name__} {qid!r}")
    if domain is not None and not isinstance(domain, str):
        raise InvalidQuestion(f"domain must be a string, got {type(domain).__name__} {domain!r}")
    text = text.strip()
    tup = tuple(clean)
    dom = domain.strip() if domain else "default"
    return Question(id=str(qid) if qid not in (None, "") else question_id(text, tup), question=text, choices=tup,
                    answer=letter, domain=dom)


INSTRUCTION = "Answer the following multiple-choice question with the letter of the correct option (A, B, C or D)."


def prompt_text(q: Question) -> str:
    options = "\n".join(f"{letter}) {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{INSTRUCTION}\n\nQuestion: {q.question}\n{options}"


def build_prompt(tokenizer, q: Question) -> str:
    """The chat-templated prompt ending where the assistant's answer letter begins."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt_text(q)}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt_text(q) + "\nAnswer:"


def letter_token_ids(tokenizer) -> list[int]:
    """Token ids of A-D as the answer's first token: "A" after a chat template's assistant prefix,
    " A" after a plain `Answer:` prompt (the last token, should the space be a token of its own)."""
    prefix = "" if getattr(tokenizer, "chat_template", None) else " "
    ids = []
    for letter in LETTERS:
        toks = tokenizer.encode(prefix + letter, add_special_tokens=False)
        if not toks:
            raise ValueError(f"the tokenizer has no token for {letter!r}")
        ids.append(toks[-1])
    if len(set(ids)) != 4:
        raise ValueError("the answer letters A-D do not map to four distinct tokens")
    return ids
