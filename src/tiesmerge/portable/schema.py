"""The tournament's question and answer shapes, checked strictly (what the organisers' parser will read)."""

from __future__ import annotations

from .mcq import LETTERS, InvalidQuestion, make_question
from .text import is_english, word_count

EXPLANATION_WORDS = 100


def normalize_letter(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip().upper().strip("()").rstrip(").:").strip()
    return v if v in LETTERS else None


def tournament_question(obj: object, topic: str) -> dict:
    """A drafted question → the exact output shape `{topic, question, choices: ["A) …"×4], answer, explanation}`;
    raise InvalidQuestion naming the first problem (not four distinct non-empty choices, no single letter
    answer, explanation missing or over 100 words, not English)."""
    if not isinstance(obj, dict):
        raise InvalidQuestion("the draft is not a JSON object")
    letter = normalize_letter(obj.get("answer"))
    if letter is None:
        raise InvalidQuestion(f"answer must be one letter A-D (got {obj.get('answer')!r})")
    q = make_question(obj.get("question"), obj.get("choices"), letter, topic)
    explanation = obj.get("explanation")
    if not isinstance(explanation, str) or not explanation.strip():
        raise InvalidQuestion("missing explanation")
    explanation = " ".join(explanation.split())
    if word_count(explanation) > EXPLANATION_WORDS:
        raise InvalidQuestion(f"explanation has {word_count(explanation)} words (limit {EXPLANATION_WORDS})")
    if not all(is_english(t) for t in (q.question, *q.choices, explanation)):
        raise InvalidQuestion("not English")
    return {"topic": topic, "question": q.question, "choices": [f"{l}) {c}" for l, c in zip(LETTERS, q.choices)],
            "answer": letter, "explanation": explanation}


def check_question(item: object) -> list[str]:
    """Problems of an emitted question (empty when it is exactly the tournament shape)."""
    if not isinstance(item, dict):
        return ["not an object"]
    problems = []
    if set(item) != {"topic", "question", "choices", "answer", "explanation"}:
        problems.append(f"keys are {sorted(item)}")
    if not isinstance(item.get("topic"), str) or not item.get("topic"):
        problems.append("topic is not a non-empty string")
    choices = item.get("choices")
    if not (isinstance(choices, list) and len(choices) == 4
            and all(isinstance(c, str) and c.startswith(f"{l}) ") and c[3:].strip() for l, c in zip(LETTERS, choices))):
        problems.append("choices are not ['A) …', 'B) …', 'C) …', 'D) …']")
    elif len({c[3:].strip() for c in choices}) != 4:
        problems.append("choices are not distinct")
    if item.get("answer") not in LETTERS:
        problems.append("answer is not one of A, B, C, D")
    if not isinstance(item.get("question"), str) or not item["question"].strip():
        problems.append("question is empty")
    exp = item.get("explanation")
    if not isinstance(exp, str) or word_count(exp) > EXPLANATION_WORDS:
        problems.append("explanation is not a string of at most 100 words")
    return problems


def check_answer(item: object) -> list[str]:
    """Problems of an emitted answer (empty when it is exactly `{answer, reasoning}`)."""
    if not isinstance(item, dict):
        return ["not an object"]
    problems = []
    if set(item) != {"answer", "reasoning"}:
        problems.append(f"keys are {sorted(item)}")
    if item.get("answer") not in LETTERS:
        problems.append("answer is not one of A, B, C, D")
    r = item.get("reasoning")
    if not isinstance(r, str) or not r.strip() or word_count(r) > EXPLANATION_WORDS:
        problems.append("reasoning is not a non-empty string of at most 100 words")
    return problems
