"""The question agent (tiesmerge.portable.question), batched: schema checks, batched drafts, one batched self-check,
the verified fallback bank (built by deploy, read without tiesmerge), no duplicates, per-batch deadlines."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tests.agents.conftest import SlowForward
from tiesmerge.agents.fallback import build_bank, verified
from tiesmerge.eval.builtin.build import domain_items
from tiesmerge.eval.questions import InvalidQuestion
from tiesmerge.portable.answer import AnswerAgent, parse_entry
from tiesmerge.portable.bank import FallbackBank, domain_for
from tiesmerge.portable.config import AnswerSettings, QuestionSettings
from tiesmerge.portable.errors import AgentInputError
from tiesmerge.portable.question import QuestionAgent
from tiesmerge.portable.schema import check_question, tournament_question


@pytest.fixture(scope="module")
def bank_data():
    return build_bank(per_domain=12, seed=0)

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


def test_math_fallback_answers_match_an_independent_evaluation(bank_data):
    """Arithmetic fallbacks: evaluating the question's own expression with Python gives the marked choice."""
    checked = 0
    for item in bank_data["questions"]["math"]:
        assert check_question(item) == []
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
    assert checked >= 3


def test_bank_has_every_domain_unique_questions_and_spread_answers(bank_data):
    for domain, items in bank_data["questions"].items():
        assert len(items) == 12 and all(check_question(it) == [] and it["topic"] == domain for it in items)
        assert len({it["question"] for it in items}) == 12
    letters = [it["answer"] for items in bank_data["questions"].values() for it in items]
    assert len(set(letters)) == 4  # the answer sits at a random letter


def test_topics_map_to_domains_and_an_exhausted_domain_borrows(bank_data):
    assert domain_for("math") == "math"
    assert domain_for("Python programming") == "code"
    assert domain_for("World geography") == "humanities"
    assert domain_for("Organic chemistry") == "stem"
    assert domain_for("Knitting patterns") is None
    bank = FallbackBank(bank_data, ["Knitting patterns", "Algebra"])
    taken: set[str] = set()
    first = bank.draw("Algebra", taken)
    assert first["topic"] == "Algebra" and first["question"] in {it["question"] for it in bank_data["questions"]["math"]}
    assert bank.draw("Knitting patterns", taken)["topic"] in ("math", "code", "stem", "humanities")
    drawn = [bank.draw("Algebra", taken) for _ in range(4 * 12 - 2)]
    assert all(d is not None for d in drawn) and len(taken) == 48  # math ran out: the other domains stand in
    assert {d["topic"] for d in drawn} >= {"Algebra", "code"} and bank.draw("Algebra", taken) is None


@pytest.mark.parametrize("content, problem", [
    (None, "no fallback bank"),
    ("{", "cannot be read"),
    ('{"version": 99}', "not a version-1 bank"),
    ('{"version": 1, "questions": {}}', "has no questions"),
])
def test_a_bad_bank_file_is_one_line(tmp_path, content, problem):
    path = tmp_path / "bank.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AgentInputError, match=problem):
        FallbackBank.load(path, ["math"])


def _agent(tiny_model, bank_data, **settings):
    model, tok = tiny_model
    qs = QuestionSettings(**{"max_new_tokens": 40, **settings})
    bank = FallbackBank(bank_data, qs.topics, seed=qs.seed)
    return QuestionAgent(model, tok, qs, AnswerAgent(model, tok, AnswerSettings(max_new_tokens=4)), bank)


def test_random_model_falls_back_to_valid_unique_questions(tiny_model, bank_data):
    agent = _agent(tiny_model, bank_data, batch_size=5)
    records = agent.generate(12)
    items = [r.item for r in records]
    assert all(check_question(it) == [] for it in items)
    assert len({it["question"] for it in items}) == 12
    assert [it["topic"] for it in items] == ["math", "code", "stem", "humanities"] * 3
    assert all(r.source == "fallback" and r.why_fallback for r in records)
    assert [r.batch for r in records] == [0] * 5 + [1] * 5 + [2] * 2


def test_batched_greedy_drafts_equal_one_at_a_time(tiny_model, bank_data):
    from tiesmerge.portable.deadline import Deadline

    agent = _agent(tiny_model, bank_data, temperature=0.0, max_new_tokens=12)
    topics = ["optics", "the history of Rome", "prime numbers"]
    together = agent.draft(topics, Deadline(60))
    assert together == [agent.draft([t], Deadline(60))[0] for t in topics]
    assert all(n == 12 for _, n in together)


def test_self_check_keeps_an_agreeing_draft_and_replaces_a_disagreeing_one(tiny_model, bank_data, monkeypatch):
    agent = _agent(tiny_model, bank_data, topics=("astronomy",))
    letter, _ = agent.answerer.choose(parse_entry(VALID))
    wrong = "ABCD"[("ABCD".index(letter) + 1) % 4]
    import json

    drafts = [json.dumps({**VALID, "answer": letter}), json.dumps({**VALID, "question": "Which planet is hottest?",
                                                                   "answer": wrong})]
    monkeypatch.setattr(agent, "draft", lambda topics, deadline: [(d, 10) for d in drafts[:len(topics)]])
    kept, replaced = agent.generate(2)
    assert kept.source == "model" and kept.item == {**VALID, "answer": letter, "topic": "astronomy"}
    assert replaced.source == "fallback" and f"self-check answered {letter}, draft says {wrong}" in replaced.why_fallback
    assert check_question(replaced.item) == []


def test_a_repeated_draft_is_replaced_within_a_batch_and_across_batches(tiny_model, bank_data, monkeypatch):
    agent = _agent(tiny_model, bank_data, topics=("astronomy",), self_check=False, batch_size=2)
    import json

    monkeypatch.setattr(agent, "draft", lambda topics, deadline: [(json.dumps(VALID), 10)] * len(topics))
    first, second, third = agent.generate(3)
    assert first.source == "model" and second.source == "fallback" and third.source == "fallback"
    assert "repeats" in second.why_fallback and "repeats" in third.why_fallback
    assert len({r.item["question"] for r in (first, second, third)}) == 3


def test_slow_drafting_stays_inside_the_question_deadline(tiny_model, bank_data):
    agent = _agent(tiny_model, bank_data, max_new_tokens=500, deadline_s=1.5, batch_size=2)
    with SlowForward(agent.model, 0.05):
        records = agent.generate(3)
    assert all(r.time_s < 1.5 for r in records)
    assert all(check_question(r.item) == [] for r in records)
    assert all("deadline" in (r.why_fallback or "") or r.draft_tokens < 500 for r in records)


def test_draft_prompt_runs_through_the_chat_template(tiny_model):
    from tiesmerge.portable.question import DRAFT_PREFIX, draft_prompt

    _, tok = tiny_model
    text = draft_prompt(tok, "optics")
    assert text.startswith("<|im_start|>user\n") and "about optics" in text and text.endswith(DRAFT_PREFIX)
