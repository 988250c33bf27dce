"""The question agent: schema checks, self-check, verified fallbacks, no duplicates, deadlines."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tests.agents.conftest import SlowForward
from tiesmerge.agents.answer import AnswerAgent, parse_entry
from tiesmerge.agents.config import AnswerSettings, QuestionSettings
from tiesmerge.agents.fallback import FallbackPool, domain_for, verified
from tiesmerge.agents.question import QuestionAgent
from tiesmerge.agents.schema import check_question, tournament_question
from tiesmerge.eval.builtin.build import domain_items
from tiesmerge.eval.questions import InvalidQuestion

VALID = {"question": "Which planet is largest?", "choices": ["A) Mars", "B) Jupiter", "C) Venus", "D) Earth"],
         "answer": "B", "explanation": "Jupiter is the largest planet in the Solar System."}


def test_a_valid_draft_is_normalised_to_the_tournament_shape():
    item = tournament_question({**VALID, "choices": {"A": "Mars", "B": "Jupiter", "C": "Venus", "D": "Earth"},
                                "answer": "(b)"}, "astronomy")
    assert item == {**VALID, "topic": "astronomy"}
    assert check_question(item) == []


@pytest.mark.parametrize("change, problem", [
    ({"choices": ["A) Mars", "B) Jupiter", "C) Venus"]}, "need exactly 4 choices"),
    ({"choices": ["A) Mars", "B) Mars", "C) Venus", "D) Earth"]}, "not distinct"),
    ({"answer": "E"}, "one letter A-D"),
    ({"answer": None}, "one letter A-D"),
    ({"explanation": "word " * 101}, "101 words"),
    ({"explanation": ""}, "missing explanation"),
    ({"question": ""}, "missing or empty question text"),
    ({"question": "Какая планета самая большая?"}, "not English"),
])
def test_invalid_drafts_are_refused_with_the_reason(change, problem):
    with pytest.raises(InvalidQuestion, match=re.escape(problem)):
        tournament_question({**VALID, **change}, "astronomy")


@pytest.mark.parametrize("kind_domain", ["math", "code", "stem", "humanities"])
def test_fallback_checks_reject_a_wrong_answer(kind_domain):
    """Each domain's independent re-check passes the generated items and fails the same items with a wrong answer."""
    items = domain_items(kind_domain, 40, seed=3)
    good = verified(items)
    assert len(good) >= 10
    tampered = [replace(it, answer=it.distractors[0]) for it in good]
    assert verified(tampered) == []


def test_math_fallback_answers_match_an_independent_evaluation():
    """Arithmetic fallbacks: evaluating the question's own expression with Python gives the marked choice."""
    pool = FallbackPool(["math"], per_topic=40, seed=1)
    taken: set[str] = set()
    checked = 0
    for _ in range(40):
        item = pool.draw("math", taken)
        m = re.fullmatch(r"What is (.+)\?", item["question"])
        if not m:
            continue
        pct = re.fullmatch(r"([\d.]+)% of ([\d.]+)", m.group(1))
        if pct:
            value = float(pct.group(1)) * float(pct.group(2)) / 100
        elif re.fullmatch(r"[\d\s+×−()]+", m.group(1)):
            value = eval(m.group(1).replace("×", "*").replace("−", "-"), {"__builtins__": {}})
        else:
            continue
        marked = item["choices"]["ABCD".index(item["answer"])][3:]
        assert float(marked) == pytest.approx(value)
        checked += 1
    assert checked >= 5


def test_topics_map_to_domains():
    assert domain_for("math") == "math"
    assert domain_for("Python programming") == "code"
    assert domain_for("World geography") == "humanities"
    assert domain_for("Organic chemistry") == "stem"
    assert domain_for("Knitting patterns") is None
    pool = FallbackPool(["Knitting patterns", "Algebra"], per_topic=3)
    assert pool.label("Algebra") == "Algebra" and pool.label("Knitting patterns") in ("math", "code", "stem", "humanities")


def _agent(tiny_model, **settings):
    model, tok = tiny_model
    qs = QuestionSettings(**{"max_new_tokens": 40, **settings})
    pool = FallbackPool(qs.topics, per_topic=10, seed=qs.seed)
    return QuestionAgent(model, tok, qs, AnswerAgent(model, tok, AnswerSettings(max_new_tokens=4)), pool)


def test_random_model_falls_back_to_valid_unique_questions(tiny_model):
    agent = _agent(tiny_model)
    records = agent.generate(12)
    items = [r.item for r in records]
    assert all(check_question(it) == [] for it in items)
    assert len({it["question"] for it in items}) == 12
    assert [it["topic"] for it in items] == ["math", "code", "stem", "humanities"] * 3
    assert all(r.source == "fallback" and r.why_fallback for r in records)


def test_self_check_keeps_an_agreeing_draft_and_replaces_a_disagreeing_one(tiny_model, monkeypatch):
    agent = _agent(tiny_model, topics=("astronomy",))
    letter, *_ = agent.answerer.choose(parse_entry(VALID))
    wrong = "ABCD"[("ABCD".index(letter) + 1) % 4]
    import json

    drafts = iter([json.dumps({**VALID, "answer": letter}), json.dumps({**VALID, "question": "Which planet is hottest?",
                                                                        "answer": wrong})])
    monkeypatch.setattr(agent, "draft", lambda topic, deadline: (next(drafts), 10))
    kept, replaced = agent.generate(2)
    assert kept.source == "model" and kept.item == {**VALID, "answer": letter, "topic": "astronomy"}
    assert replaced.source == "fallback" and f"self-check answered {letter}, draft says {wrong}" in replaced.why_fallback
    assert check_question(replaced.item) == []


def test_a_repeated_draft_is_replaced(tiny_model, monkeypatch):
    agent = _agent(tiny_model, topics=("astronomy",), self_check=False)
    import json

    monkeypatch.setattr(agent, "draft", lambda topic, deadline: (json.dumps(VALID), 10))
    first, second = agent.generate(2)
    assert first.source == "model" and second.source == "fallback"
    assert "repeats" in second.why_fallback and first.item["question"] != second.item["question"]


def test_slow_drafting_stays_inside_the_question_deadline(tiny_model):
    agent = _agent(tiny_model, max_new_tokens=500, deadline_s=1.5)
    with SlowForward(agent.model, 0.05):
        records = agent.generate(3)
    assert all(r.time_s < 1.5 for r in records)
    assert all(check_question(r.item) == [] for r in records)
    assert any("deadline" in (r.why_fallback or "") or r.draft_tokens < 500 for r in records)


def test_draft_prompt_runs_through_the_chat_template(tiny_model):
    from tiesmerge.agents.question import DRAFT_PREFIX, draft_prompt

    _, tok = tiny_model
    text = draft_prompt(tok, "optics")
    assert text.startswith("<|im_start|>user\n") and "about optics" in text and text.endswith(DRAFT_PREFIX)
