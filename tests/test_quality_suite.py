"""The knowledge suite of `make bench-quality` (benchmarks/quality_facts.py): facts a base cannot know, one body
per specialist, phrasings split so that validation and test never reuse a training phrasing."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.core

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality_facts import PEOPLE, RELATIONS, suite  # noqa: E402


def test_each_specialist_has_its_own_people_relation_and_balanced_answers():
    data = suite(8)
    assert list(data["test"]) == list(RELATIONS)[:8]
    for relation, qs in data["train"].items():
        answers = RELATIONS[relation][0]
        assert all(sorted(q.choices) == sorted(answers) for q in qs)
        gold = collections.Counter(q.choices[q.answer_index] for q in qs[::3])  # one phrasing: each person once
        assert sorted(gold.values()) == [PEOPLE // 4] * 4
    names = [q.question for qs in data["test"].values() for q in qs]
    assert len(names) == len(set(names)) == 8 * PEOPLE * 2


def test_splits_use_disjoint_phrasings_and_agree_on_the_facts():
    data = suite(3)
    for relation in data["test"]:
        facts = {}
        for qs in data.values():
            for q in qs[relation]:
                person = q.id.split("-")[2]
                facts.setdefault(person, set()).add(q.choices[q.answer_index])
        assert all(len(v) == 1 for v in facts.values())  # one answer per person across splits
        phrasing = {s: {q.id.split("-")[3] for q in qs[relation]} for s, qs in data.items()}
        assert phrasing == {"train": {"0", "1", "2"}, "validation": {"3"}, "test": {"4", "5"}}
    assert [q.choices for q in suite(3)["test"]["pet"]] == [q.choices for q in data["test"]["pet"]]  # seeded


# --- the skills suite (benchmarks/quality_skills.py) -----------------------------------------------------------

from quality_skills import DOMAINS, answer_of, ordinal, verify  # noqa: E402
from quality_skills import suite as skills  # noqa: E402

SMALL = {"train": 300, "validation": 50, "test": 150}


def test_every_skills_answer_is_what_computing_it_gives():
    data = skills(sizes=SMALL)
    questions = [q for split in data.values() for qs in split.values() for q in qs]
    assert verify(questions) == []  # code: each snippet run in the sandbox prints the gold choice
    import ast
    import re

    for q in questions:  # and independently of the generator's bookkeeping, from the question text alone
        gold = q.choices[q.answer_index]
        if q.domain == "math":
            a, b = map(int, re.findall(r"\d+", q.question))
            assert gold == str(a + b)
        elif q.domain == "code":
            listing, index = re.search(r"x = (\[.*\]); print\(x\[(-?\d)\]\)", q.question).groups()
            assert gold == ast.literal_eval(listing)[int(index)]
        elif q.domain == "stem":
            small, value, big = re.search(r"How many (\w+) are in ([\d.]+) (\w+)\?", q.question).groups()
            size = {"kilo": 1000, "centi": 0.01, "milli": 0.001}
            scale = next((v for k, v in size.items() if big.startswith(k)), 1) / next(
                (v for k, v in size.items() if small.startswith(k)), 1)
            assert abs(float(gold) - float(value) * scale) <= 1e-9 * max(1.0, float(value) * scale)
        else:
            year = int(re.search(r"\d+", q.question).group())
            century = -(-year // 100)  # ceil: the year 1500 ends the 15th century
            assert gold == f"the {ordinal(century)} century"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th"]


def test_no_skills_fact_is_shared_across_splits_and_the_suite_is_seeded():
    data = skills(sizes=SMALL)
    for domain in DOMAINS:
        facts = {split: {q.meta["fact"] for q in data[split][domain]} for split in data}
        assert all(len(facts[s]) == len(data[s][domain]) == SMALL[s] for s in data)  # each fact once
        assert not facts["train"] & facts["test"] and not facts["train"] & facts["validation"]
        assert not facts["validation"] & facts["test"]
        texts = {split: {q.question for q in data[split][domain]} for split in data}
        assert not texts["train"] & texts["test"]
        for split, qs in data.items():  # answer letters balanced (the position prior gives nothing)
            counts = collections.Counter(q.answer for q in qs[domain])
            assert max(counts.values()) - min(counts.values()) <= 1, (domain, split, counts)
            assert all(len(set(q.choices)) == 4 for q in qs[domain])
    again = skills(sizes=SMALL)
    assert [q.choices for q in again["test"]["code"]] == [q.choices for q in data["test"]["code"]]
    assert [q.question for q in skills(seed=1, sizes=SMALL)["test"]["math"]] != [q.question for q in data["test"]["math"]]


def test_skills_distractors_are_the_typical_mistakes():
    data = skills(sizes=SMALL)
    for q in data["test"]["humanities"]:
        gold = int(q.choices[q.answer_index].split()[1][:-2])
        wrong = {int(c.split()[1][:-2]) for c in q.choices if c != q.choices[q.answer_index]}
        assert wrong <= {gold - 2, gold - 1, gold + 1, gold + 2}
    for q in data["test"]["stem"]:
        gold = float(q.choices[q.answer_index])
        ratios = sorted(round(float(c) / gold, 6) for c in q.choices)
        assert all(r in (0.001, 0.01, 0.1, 1.0, 10.0, 100.0) for r in ratios)  # powers of ten off
    assert answer_of("math", {"a": 47, "b": 38}) == "85"


def test_gain_kept_interval_is_a_paired_bootstrap_of_the_ratio():
    import random

    from quality_ceilings import gain_kept_interval

    rng = random.Random(0)
    base = [int(rng.random() < 0.25) for _ in range(1000)]
    spec = [max(b, int(rng.random() < 0.8)) for b in base]
    assert gain_kept_interval(spec, base, spec) == (1.0, 1.0)  # a merge that is the specialist keeps all
    assert gain_kept_interval(base, base, spec) == (0.0, 0.0)
    half = [s if i % 2 else b for i, (b, s) in enumerate(zip(base, spec))]
    lo, hi = gain_kept_interval(half, base, spec)
    point = sum(m - b for m, b in zip(half, base)) / sum(s - b for s, b in zip(spec, base))
    assert lo < point < hi and hi - lo < 0.2  # ~±6 points at n = 1000 and a ~55-point gain
    lo4, hi4 = gain_kept_interval(half[:250], base[:250], spec[:250])
    assert hi4 - lo4 > 1.5 * (hi - lo)  # a quarter of the questions: about twice as wide
    assert gain_kept_interval(base, base, base) is None  # no gain to keep
