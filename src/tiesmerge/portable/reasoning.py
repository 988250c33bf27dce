"""Reasoning that agrees with the answer.

The answer agent generates its reasoning after a lead that states the chosen option ("B) Kyoto is correct
because"), so the text starts from the letter pass's choice. A model may still drift to another option
("The correct answer is D) Nagoya."): `contradiction` finds such a sentence, and the agent then writes the
faithful template sentence instead.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from .mcq import LETTERS
from .text import clip_words, is_english

# another letter used as an option: "D)", "(D)", "option D", "choice D", "answer is D", "answer: D", "D is correct"
_LETTER_REFS = (
    re.compile(r"(?<![A-Za-z0-9])\(([A-D])\)"),
    re.compile(r"(?<![A-Za-z0-9(])([A-D])\)"),
    re.compile(r"\b(?i:option|choice|letter)\s+\(?([A-D])\b"),
    re.compile(r"\b(?i:answer\s*(?:is|would be|should be|must be|:|=)\s*\(?(?:option\s+)?)([A-D])\b(?![a-z'])"),
    re.compile(r"(?<![A-Za-z0-9])([A-D])\s+is\s+(?:the\s+)?(?:correct|right|best|true)\b"),
)
_ANSWER_IS = re.compile(r"\b(?:answer|correct (?:option|choice)|right (?:option|choice))\s*(?:is|would be|:|=)\s*"
                        r"(.{1,80})", re.I)


def lead(letter: str, choice: str) -> str:
    """The words the reasoning starts with (also the prompt's continuation, so the model goes on from them)."""
    return f"{letter}) {choice} is correct because"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def contradiction(text: str, letter: str, choices: Sequence[str]) -> str | None:
    """Why `text` names an option other than `letter` as the answer, or None when it does not."""
    for pattern in _LETTER_REFS:
        for m in pattern.finditer(text):
            other = m.group(1).upper()
            if other != letter:
                return f"names option {other}"
    chosen = _norm(choices[LETTERS.index(letter)])
    for m in _ANSWER_IS.finditer(text):
        said = _norm(m.group(1))
        for other_letter, choice in zip(LETTERS, choices):
            c = _norm(choice)
            if other_letter != letter and c and said.startswith(c) and not said.startswith(chosen):
                return f"says the answer is {choice!r}"
    for other_letter, choice in zip(LETTERS, choices):
        c = _norm(choice)
        if other_letter == letter or not c or c in chosen:
            continue
        if re.search(re.escape(c) + r"\s+is\s+(?:the\s+)?(?:correct|right)\b", _norm(text)):
            return f"says {choice!r} is correct"
    return None


def template(letter: str, choice: str, logprobs: Sequence[float] | None) -> str:
    """A faithful sentence from the letter pass alone."""
    if logprobs is None:
        return f"{letter}) {choice} is given by default: no model answer could be computed in time."
    probs = [math.exp(v) for v in logprobs]
    share = probs[LETTERS.index(letter)] / max(sum(probs), 1e-12)
    return f"{letter}) {choice} is the most likely option under the model ({share:.0%} of the probability over A-D)."


def compose(letter: str, choices: Sequence[str], generated: str, logprobs, words: int) -> tuple[str, str | None]:
    """(reasoning, why the template was used or None): the lead plus the generated text when that agrees with the
    answer and is usable English; the template otherwise."""
    choice = choices[LETTERS.index(letter)]
    body = generated.split("\n\n")[0].strip()
    why = None
    if not body:
        why = "no reasoning generated"
    elif not is_english(body):
        why = "not English"
    else:
        why = contradiction(body, letter, choices)
    if why is None:
        return clip_words(f"{lead(letter, choice)} {body}", words), None
    return clip_words(template(letter, choice, logprobs), words), why
