"""The fallback bank that `tiesmerge deploy` writes: verified questions from the built-in generators, per domain,
in the tournament's shape (read by the deployed agents through tiesmerge.portable.bank, without tiesmerge).

A question enters the bank only after its answer is recomputed by an independent check of its kind (the
arithmetic re-evaluated, the code re-run in the sandbox, the fact looked up again); kinds without such a check
are left out.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Mapping

from tiesmerge.eval.builtin.build import DOMAINS, domain_items
from tiesmerge.eval.builtin.common import Item, fmt_num
from tiesmerge.eval.questions import LETTERS
from tiesmerge.portable.bank import BANK_VERSION, TOPIC_WORDS, normalize_text

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


def as_tournament_item(item: Item, domain: str, rng: random.Random) -> dict:
    """A verified built-in item in the tournament's question shape, its answer at a random letter."""
    choices = list(item.distractors[:3])
    rng.shuffle(choices)
    at = rng.randrange(4)
    choices.insert(at, item.answer)
    return {"topic": domain, "question": item.question, "choices": [f"{l}) {c}" for l, c in zip(LETTERS, choices)],
            "answer": LETTERS[at], "explanation": _explanation(item)}


def domain_bank(domain: str, need: int, seed: int) -> list[dict]:
    """`need` verified questions of one domain (some kinds are dropped for want of a check: draw more until enough)."""
    rng = random.Random(f"tiesmerge-bank-{domain}-{seed}")
    want = max(2 * need, 12)
    for _ in range(4):
        pool = verified(domain_items(domain, want, seed + 7919))
        if len(pool) >= need:
            break
        want *= 2
    items, seen = [], set()
    for it in pool:
        if normalize_text(it.question) not in seen:
            seen.add(normalize_text(it.question))
            items.append(as_tournament_item(it, domain, rng))
    return items[:need]


def build_bank(per_domain: int = 60, seed: int = 0) -> dict:
    """The bank as JSON data: every built-in domain's verified questions and the topic words that route to them."""
    return {"version": BANK_VERSION, "topic_words": {d: list(w) for d, w in TOPIC_WORDS.items()},
            "questions": {d: domain_bank(d, per_domain, seed) for d in DOMAINS}}


def _explanation(item: Item) -> str:
    kind = item.meta.get("kind")
    if kind == "arith":
        return f"Evaluating {item.meta['expr'].replace('*', '×')} with the usual order of operations gives {item.answer}."
    if kind == "code":
        return f"Running the code prints {item.answer}."
    if kind == "conversion":
        return f"Multiplying {fmt_num(item.meta['amount'])} by the conversion factor to SI units gives {item.answer}."
    return f"The correct answer is {item.answer}."
