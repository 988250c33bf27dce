"""Verified fallback questions from the built-in generators, one pool per topic.

A question enters a pool only after its answer is recomputed by an independent check of its kind
(the arithmetic re-evaluated, the code re-run in the sandbox, the fact looked up again); kinds without
such a check are left out. Draws are seeded and never repeat a question text within a run.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterable, Mapping

from tiesmerge.eval.builtin.build import DOMAINS, domain_items
from tiesmerge.eval.builtin.common import Item, fmt_num
from tiesmerge.eval.questions import LETTERS

# a requested topic goes to the first domain one of whose words it contains; no match: the domains in turn
TOPIC_WORDS: Mapping[str, tuple[str, ...]] = {
    "math": ("math", "arithmetic", "algebra", "number", "percent", "equation", "calcul", "word problem", "quantitative"),
    "code": ("code", "coding", "program", "python", "software", "computer", "algorithm"),
    "stem": ("stem", "science", "physic", "chemi", "element", "unit", "engineer", "constant"),
    "humanities": ("humanit", "history", "geograph", "countr", "capital", "currenc", "culture", "continent", "world"),
}


def domain_for(topic: str) -> str | None:
    t = topic.lower()
    if t in DOMAINS:
        return t
    return next((d for d, words in TOPIC_WORDS.items() if any(w in t for w in words)), None)


# --- independent re-checks, by the item's meta kind -------------------------------------------------------

def _check_arith(item: Item) -> bool:
    from tiesmerge.eval.builtin.math_q import evaluate

    return fmt_num(float(evaluate(item.meta["expr"]))) == item.answer


def _check_element(item: Item) -> bool:
    import periodictable

    el = periodictable.elements[item.meta["number"]]
    expected = {"symbol": el.symbol, "name": el.name.capitalize(), "number": str(el.number),
                "mass": f"{el.mass:.2f}"}.get(item.meta["field"])
    return expected == item.answer


def _check_country(item: Item) -> bool:
    from tiesmerge.eval.builtin.humanities_q import CONTINENTS, countries, currency_name

    c = countries().get(item.meta["iso"])
    if c is None:
        return False
    expected = {"capital": c["capital"], "continent": CONTINENTS.get(c["continentcode"]),
                "currency": currency_name(c["currencycode"])}.get(item.meta["field"])
    return expected == item.answer


def _check_conversion(item: Item) -> bool:
    import scipy.constants as sc

    return fmt_num(item.meta["amount"] * getattr(sc, item.meta["unit"])) == item.answer


def _check_code_batch(items: list[Item]) -> list[bool]:
    from tiesmerge.eval.builtin.sandbox import run_snippets

    results = run_snippets([it.meta["code"] for it in items], per_snippet_timeout=10.0)
    return [r["ok"] and " ".join(r["stdout"].strip().splitlines()) == it.answer for it, r in zip(items, results)]


CHECKS: Mapping[str, Callable[[Item], bool]] = {
    "arith": _check_arith, "element": _check_element, "country": _check_country, "conversion": _check_conversion,
}
BATCH_CHECKS: Mapping[str, Callable[[list[Item]], list[bool]]] = {"code": _check_code_batch}


def verified(items: Iterable[Item]) -> list[Item]:
    """The items whose answers an independent check reproduces."""
    items = list(items)
    ok = [False] * len(items)
    for i, it in enumerate(items):
        check = CHECKS.get(it.meta.get("kind"))
        ok[i] = bool(check and check(it))
    for kind, check in BATCH_CHECKS.items():
        idx = [i for i, it in enumerate(items) if it.meta.get("kind") == kind]
        for i, good in zip(idx, check([items[i] for i in idx]) if idx else []):
            ok[i] = good
    return [it for it, good in zip(items, ok) if good]


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


class FallbackPool:
    """Verified built-in questions for a run's topics, drawn without repeats."""

    def __init__(self, topics: Iterable[str], per_topic: int, seed: int = 0):
        self.rng = random.Random(f"tiesmerge-fallback-{seed}")
        self.domain_of: dict[str, str] = {}
        self.items: dict[str, list[Item]] = {}
        rotation = list(DOMAINS)
        for i, topic in enumerate(dict.fromkeys(topics)):
            domain = domain_for(topic) or rotation[i % len(rotation)]
            self.domain_of[topic] = domain
            if domain not in self.items:
                self.items[domain] = self._build(domain, per_topic, seed)

    def _build(self, domain: str, need: int, seed: int) -> list[Item]:
        # some kinds are dropped for want of a check, and drafts may take some texts: draw more until enough
        want = max(3 * need, 12)
        for _ in range(4):
            pool = verified(domain_items(domain, want, seed + 7919))
            if len(pool) >= need + 2:
                break
            want *= 2
        self.rng.shuffle(pool)
        return pool

    def label(self, topic: str) -> str:
        """The topic an emitted fallback question carries: the requested one when a built-in domain matches it,
        else the domain actually used."""
        domain = self.domain_of[topic]
        return topic if domain_for(topic) == domain else domain

    def draw(self, topic: str, taken: set[str]) -> dict | None:
        """A fallback question in the output shape (not in `taken`, which it joins), or None when exhausted."""
        pool = self.items[self.domain_of[topic]]
        while pool:
            item = pool.pop()
            if normalize_text(item.question) in taken:
                continue
            taken.add(normalize_text(item.question))
            choices = list(item.distractors[:3])
            self.rng.shuffle(choices)
            at = self.rng.randrange(4)
            choices.insert(at, item.answer)
            explanation = _explanation(item)
            return {"topic": self.label(topic), "question": item.question,
                    "choices": [f"{l}) {c}" for l, c in zip(LETTERS, choices)], "answer": LETTERS[at],
                    "explanation": explanation}
        return None


def _explanation(item: Item) -> str:
    kind = item.meta.get("kind")
    if kind == "arith":
        return f"Evaluating {item.meta['expr'].replace('*', '×')} with the usual order of operations gives {item.answer}."
    if kind == "code":
        return f"Running the code prints {item.answer}."
    if kind == "conversion":
        return f"Multiplying {fmt_num(item.meta['amount'])} by the conversion factor to SI units gives {item.answer}."
    return f"The correct answer is {item.answer}."
