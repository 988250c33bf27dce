"""The verified fallback questions, as data: `fallback_bank.json`, written and verified by `tiesmerge deploy`
(each answer recomputed by an independent check of its kind), read here without tiesmerge.

Shape: {"version": 1, "topic_words": {domain: [word, …]}, "questions": {domain: [tournament question, …]}}.
A requested topic goes to the first domain one of whose words it contains; no match: the domains in turn.
Draws are seeded and never repeat a question text within a run."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Iterable, Mapping

from .errors import AgentInputError
from .schema import check_question

BANK_VERSION = 1
# topic words per built-in domain (deploy writes them into the bank; the order decides ties)
TOPIC_WORDS: Mapping[str, tuple[str, ...]] = {
    "math": ("math", "arithmetic", "algebra", "number", "percent", "equation", "calcul", "word problem", "quantitative"),
    "code": ("code", "coding", "program", "python", "software", "computer", "algorithm"),
    "stem": ("stem", "science", "physic", "chemi", "element", "unit", "engineer", "constant"),
    "humanities": ("humanit", "history", "geograph", "countr", "capital", "currenc", "culture", "continent", "world"),
}


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def domain_for(topic: str, topic_words: Mapping[str, Iterable[str]] = TOPIC_WORDS) -> str | None:
    t = topic.lower()
    if t in topic_words:
        return t
    return next((d for d, words in topic_words.items() if any(w in t for w in words)), None)


class FallbackBank:
    """Verified questions per domain, drawn without repeats for a run's topics."""

    def __init__(self, data: Mapping, topics: Iterable[str], seed: int = 0):
        questions = data.get("questions") if isinstance(data, Mapping) else None
        if not isinstance(questions, Mapping) or not questions:
            raise AgentInputError("the fallback bank has no questions; redeploy with `tiesmerge deploy`")
        self.topic_words = {d: tuple(w) for d, w in (data.get("topic_words") or TOPIC_WORDS).items()}
        self.rng = random.Random(f"tiesmerge-fallback-{seed}")
        self.items: dict[str, list[dict]] = {}
        for domain, items in questions.items():
            good = [dict(it) for it in items if check_question(it) == []]
            self.rng.shuffle(good)
            self.items[str(domain)] = good
        rotation = list(self.items)
        self.domain_of = {}
        for i, topic in enumerate(dict.fromkeys(topics)):
            domain = domain_for(topic, self.topic_words)
            self.domain_of[topic] = domain if domain in self.items else rotation[i % len(rotation)]

    @classmethod
    def load(cls, path: Path, topics: Iterable[str], seed: int = 0) -> "FallbackBank":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AgentInputError(f"no fallback bank at {path}: redeploy with `tiesmerge deploy`, or set "
                                  "`bank:` in agents.yaml") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise AgentInputError(f"fallback bank {path} cannot be read ({type(exc).__name__}: {str(exc)[:120]}); "
                                  "redeploy with `tiesmerge deploy`") from None
        if not isinstance(data, dict) or data.get("version") != BANK_VERSION:
            raise AgentInputError(f"fallback bank {path} is not a version-{BANK_VERSION} bank; redeploy")
        return cls(data, topics, seed)

    def label(self, topic: str, domain: str) -> str:
        """The topic an emitted fallback carries: the requested one when its domain matches, else the domain."""
        return topic if domain_for(topic, self.topic_words) == domain else domain

    def draw(self, topic: str, taken: set[str]) -> dict | None:
        """A fallback question (not in `taken`, which it joins): from the topic's domain, then from the others;
        None when every domain is exhausted."""
        first = self.domain_of.get(topic) or next(iter(self.items))
        for domain in [first, *(d for d in self.items if d != first)]:
            pool = self.items[domain]
            while pool:
                item = pool.pop()
                key = normalize_text(item["question"])
                if key in taken:
                    continue
                taken.add(key)
                return {**item, "topic": self.label(topic, domain)}
        return None
