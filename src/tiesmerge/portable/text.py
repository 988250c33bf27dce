"""Small text rules of the tournament: word limits, English only, JSON found inside generated text."""

from __future__ import annotations

import json
import re

_WORD = re.compile(r"\S+")


def word_count(text: str) -> int:
    return len(_WORD.findall(text or ""))


def clip_words(text: str, limit: int) -> str:
    """At most `limit` words, whitespace collapsed; cut at the last sentence end when one is near the limit."""
    words = _WORD.findall(text or "")
    if len(words) <= limit:
        return " ".join(words)
    clipped = " ".join(words[:limit])
    end = max(clipped.rfind(". "), clipped.rfind("! "), clipped.rfind("? "))
    return clipped[: end + 1] if end > len(clipped) // 2 else clipped


def is_english(text: str, min_share: float = 0.97) -> bool:
    """Latin-script text: at least `min_share` of the letters are ASCII (symbols, digits and code pass)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True
    return sum(c.isascii() for c in letters) / len(letters) >= min_share


def first_json_object(text: str) -> dict | None:
    """The first JSON object in `text` (models wrap it in prose or ``` fences), or None."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text or ""):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None
