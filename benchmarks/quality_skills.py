"""The skills suite's data: four specialists, math / code / STEM / humanities, each learning a skill the base model
lacks and the others do not teach — the mission's shape (overlapping-format, multiple-choice specialists) with enough
separable gain per domain that a merge's losses show.

    math        two-digit addition                       "What is 47 + 38?" → 85
    code        Python list indexing (negative too)       "What does this Python code print? x = [...]; print(x[-2])"
    stem        metric unit conversion                    "How many millilitres are in 3.7 litres?" → 3700
    humanities  the century of a year                     "In which century is the year 1487?" → the 15th century

Every answer is computed (the code answers by running the snippet in the built-in sandbox, in `verify`), the
distractors are the typical mistakes (a carry dropped, a one-based index, a power of ten off, the century off by
one), and each question's *fact* (the pair added, the list and index, the value and units, the year) belongs to one
split only, so the test split measures the skill, not recall. Deterministic for (seed, sizes).
"""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from typing import Callable

from tiesmerge.eval.questions import LETTERS, Question, make_question

SKILLS_VERSION = 1
DOMAINS = ("math", "code", "stem", "humanities")
SIZES = {"train": 1500, "validation": 200, "test": 1000}

WORDS = ("oak", "elm", "ash", "fir", "yew", "pine", "lime", "teak", "palm", "birch", "cedar", "maple", "alder",
         "hazel", "larch", "rowan", "willow", "poplar", "spruce", "cherry", "plum", "pear", "fig", "olive")
# unit, its size in base units (as a power of ten), the quantity
UNITS = {"metres": ("metre", 0), "grams": ("gram", 0), "litres": ("litre", 0)}
PREFIXES = {"kilo": 3, "": 0, "centi": -2, "milli": -3}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def plain(d: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 3700, 0.037, 4.2."""
    text = format(d.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --- one generator per skill: rng → (fact, question, answer, distractors, meta) ---------------------------------

def math_item(rng: random.Random):
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    s = a + b
    carry = (a % 10 + b % 10) >= 10
    mistakes = [s - 10 if carry else s + 10, s + 1, s - 1, s + 10 if carry else s - 10, s + 2, s - 2]
    return (min(a, b), max(a, b)), f"What is {a} + {b}?", str(s), mistakes, {"a": a, "b": b}


def code_item(rng: random.Random):
    words = rng.sample(WORDS, 5)
    k = rng.choice([i for i in range(-5, 5)])
    code = f"x = {words!r}; print(x[{k}])"
    answer = words[k]
    pos = k % 5
    mistakes = [words[(pos - 1) % 5], words[(pos + 1) % 5], words[(pos + 2) % 5], words[(pos - 2) % 5]]
    return (tuple(words), k), f"What does this Python code print? {code}", answer, mistakes, {"code": code}


def stem_item(rng: random.Random):
    quantity = rng.choice(list(UNITS))
    big, small = sorted(rng.sample(list(PREFIXES), 2), key=lambda p: -PREFIXES[p])
    exp = PREFIXES[big] - PREFIXES[small]
    value = Decimal(rng.randint(11, 999)) / Decimal(10) ** rng.choice((0, 1, 2))
    unit_big, unit_small = f"{big}{quantity}", f"{small}{quantity}"
    answer = plain(value * Decimal(10) ** exp)
    mistakes = [plain(value * Decimal(10) ** (exp + d)) for d in (-1, 1, -2, 2, -3)]
    question = f"How many {unit_small} are in {plain(value)} {unit_big}?"
    return (quantity, big, small, plain(value)), question, answer, mistakes, {"value": str(value), "exp": exp}


def humanities_item(rng: random.Random):
    year = rng.randint(101, 2999)
    century = (year - 1) // 100 + 1
    wrong = [c for c in (century - 1, century + 1, century + 2, century - 2) if c >= 1]
    phrasing = rng.choice(("In which century is the year {y}?", "The year {y} falls in which century?",
                           "Which century does the year {y} belong to?"))
    return year, phrasing.format(y=year), f"the {ordinal(century)} century", \
        [f"the {ordinal(c)} century" for c in wrong], {"year": year}


GENERATORS: dict[str, Callable] = {"math": math_item, "code": code_item, "stem": stem_item,
                                   "humanities": humanities_item}


def answer_of(domain: str, meta: dict) -> str:
    """The answer recomputed from the question's parameters (code: by Python's own indexing here; `verify` runs the
    snippet itself)."""
    if domain == "math":
        return str(meta["a"] + meta["b"])
    if domain == "stem":
        return plain(Decimal(meta["value"]) * Decimal(10) ** meta["exp"])
    if domain == "humanities":
        return f"the {ordinal((meta['year'] - 1) // 100 + 1)} century"
    import ast

    listing, index = meta["code"].split("; print(x[")
    return ast.literal_eval(listing.split(" = ", 1)[1])[int(index.rstrip("])"))]


def suite(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, dict[str, list[Question]]]:
    """split → domain → questions. Facts are drawn without repetition and dealt to test, validation, train in that
    order; answer letters balanced per split."""
    sizes = dict(sizes or SIZES)
    out: dict[str, dict[str, list[Question]]] = {s: {} for s in sizes}
    for domain in DOMAINS:
        rng = random.Random(f"skills-{SKILLS_VERSION}-{seed}-{domain}")
        seen, items = set(), []
        want = sum(sizes.values())
        tries = 0
        while len(items) < want:
            tries += 1
            if tries > 50 * want:
                raise RuntimeError(f"{domain}: fact space exhausted at {len(items)} of {want}")
            fact, text, answer, mistakes, meta = GENERATORS[domain](rng)
            if fact in seen:
                continue
            seen.add(fact)
            pool = [m for m in dict.fromkeys(mistakes) if m != answer]
            items.append((text, answer, rng.sample(pool[:4], 3), {**meta, "fact": repr(fact)}))
        start = 0
        for split in ("test", "validation", "train"):
            part = items[start:start + sizes[split]]
            start += sizes[split]
            letters = [LETTERS[i % 4] for i in range(len(part))]
            rng.shuffle(letters)
            qs = []
            for i, ((text, answer, wrong, meta), letter) in enumerate(zip(part, letters)):
                choices = list(wrong)
                rng.shuffle(choices)
                choices.insert(LETTERS.index(letter), answer)
                qs.append(replace(make_question(text, choices, letter, domain, f"{domain}-{split}-{i}"), meta=meta))
            out[split][domain] = qs
    return {s: out[s] for s in sizes}


def verify(questions: list[Question]) -> list[str]:
    """Problems found by recomputing every answer: math, STEM and humanities from their parameters, code by running
    each snippet in the sandbox (stdout must be the answer). Empty when all hold."""
    from tiesmerge.eval.builtin.sandbox import run_snippets

    problems = []
    code = [q for q in questions if q.domain == "code"]
    runs = run_snippets([q.meta["code"] for q in code]) if code else []
    printed = {q.id: r.get("stdout", "").strip() for q, r in zip(code, runs)}
    for q in questions:
        gold = q.choices[LETTERS.index(q.answer)]
        want = printed[q.id] if q.domain == "code" else answer_of(q.domain, q.meta)
        if gold != want:
            problems.append(f"{q.id}: gold {gold!r}, computed {want!r}")
        if len(set(q.choices)) != 4:
            problems.append(f"{q.id}: repeated choices {q.choices}")
    return problems
