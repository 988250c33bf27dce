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
