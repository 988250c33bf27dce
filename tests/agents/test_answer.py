"""The answer agent (tiesmerge.portable.answer): batched letters as eval scores them, batched reasoning that states
the chosen option, contradictions replaced, per-batch deadlines, malformed input."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.agents.conftest import SlowForward
from tiesmerge.eval.questions import make_question
from tiesmerge.eval.scoring import score_letters
from tiesmerge.portable.answer import AnswerAgent, parse_entry
from tiesmerge.portable.config import AnswerSettings
from tiesmerge.portable.reasoning import contradiction, lead
from tiesmerge.portable.schema import check_answer

ENTRIES = [
    {"question": "What is 2 + 2?", "choices": ["A) 3", "B) 4", "C) 5", "D) 6"]},
    {"question": "What is the capital of France?", "choices": {"A": "Paris", "B": "Rome", "C": "Oslo", "D": "Bern"}},
    {"question": "Which is a prime?", "choices": ["9", "15", "7", "21"], "topic": "math"},
    {"question": "Which of these is the longest river in the world, by most measures?",
     "choices": ["A) Nile", "B) Thames", "C) Seine", "D) Rhine"]},
]


def test_batched_letters_match_eval_scoring(tiny_model):
    """One left-padded forward pass for all questions gives eval's letters and log-probs (eval reuses a prefix
    cache and runs on its own code path)."""
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=4))
    questions = [parse_entry(e) for e in ENTRIES]
    reference = score_letters(model, tok, questions, batch_size=2)
    for (letter, logprobs), ref in zip(agent.letters(questions), reference):
        assert letter == ref.predicted
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(ref.logprobs), atol=1e-4, rtol=0)


def test_batched_answers_equal_one_at_a_time(tiny_model):
    model, tok = tiny_model
    batched = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=6, batch_size=4)).answer_all(ENTRIES)
    single = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=6, batch_size=1)).answer_all(ENTRIES)
    assert [r.answer for r in batched] == [r.answer for r in single]
    assert [r.batch for r in batched] == [0, 0, 0, 0] and [r.batch for r in single] == [0, 1, 2, 3]
    for a, b in zip(batched, single):
        torch.testing.assert_close(torch.tensor(a.letter_logprobs), torch.tensor(b.letter_logprobs), atol=1e-4, rtol=0)


def test_reasoning_is_generated_after_a_lead_that_states_the_choice(tiny_model, monkeypatch):
    """The batched generate continues each question's own prompt + chosen option + lead: the greedy tokens equal a
    one-question generate from the same text."""
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=8))
    questions = [parse_entry(e) for e in ENTRIES]
    letters = [letter for letter, _ in agent.letters(questions)]
    from tiesmerge.portable.deadline import Deadline

    texts, counts, stopped = agent.reason(questions, letters, Deadline(30.0))
    assert not stopped
    for q, letter, text in zip(questions, letters, texts):
        prompt = agent.reasoning_prompt(q, letter)
        assert prompt.endswith(f"{letter}) {q.choices['ABCD'.index(letter)]}\n{lead(letter, q.choices['ABCD'.index(letter)])}")
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        assert text == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)


def test_output_shape_for_list_and_dict_choices(tiny_model):
    model, tok = tiny_model
    records = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=30)).answer_all(ENTRIES)
    assert [r.index for r in records] == [0, 1, 2, 3]
    for rec in records:
        assert check_answer(rec.output()) == []
        assert rec.status in ("ok", "no-reasoning") and rec.reasoning_tokens > 0
        choice = parse_entry(ENTRIES[rec.index]).choices["ABCD".index(rec.answer)]
        assert rec.reasoning.startswith(f"{rec.answer}) {choice}")  # the reasoning states the chosen option
    same = [{"question": "Q?", "choices": ["A) w", "B) x", "C) y", "D) z"]},
            {"question": "Q?", "choices": {"A": "w", "B": "x", "C": "y", "D": "z"}}]
    a, b = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=3)).answer_all(same)
    assert a.output() == b.output()


def test_a_contradicting_reasoning_is_replaced_by_the_template(tiny_model, monkeypatch):
    """Forced: the model 'explains' another option. The answer keeps the letter pass's choice; the reasoning
    becomes the template sentence naming that choice."""
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=8))
    q = parse_entry(ENTRIES[1])
    letter, logprobs = agent.choose(q)
    other = "ABCD"[("ABCD".index(letter) + 1) % 4]
    monkeypatch.setattr(agent, "reason", lambda qs, ls, d, stop=None: ([f"The correct answer is {other}) "
                                                             f"{q.choices['ABCD'.index(other)]}."], [9], False))
    rec = agent.answer_all([ENTRIES[1]])[0]
    assert rec.answer == letter and rec.status == "no-reasoning" and rec.template_because == f"names option {other}"
    assert rec.reasoning.startswith(f"{letter}) {q.choices['ABCD'.index(letter)]} is the most likely option")
    assert contradiction(rec.reasoning, letter, q.choices) is None


@pytest.mark.parametrize("text, why", [
    ("The correct answer is D) Nagoya.", "names option D"),
    ("so (C) it is.", "names option C"),
    ("Option A fits better.", "names option A"),
    ("the answer is Nagoya, not Kyoto", "says the answer is 'Nagoya'"),
    ("Osaka is the correct one.", "says 'Osaka' is correct"),
    ("it was the imperial capital for a thousand years.", None),
    ("the answer is a city in the Kansai region; B) fits.", None),
    ("Kyoto is correct.", None),
])
def test_contradiction_rules(text, why):
    assert contradiction(text, "B", ["Tokyo", "Kyoto", "Osaka", "Nagoya"]) == why


@pytest.mark.parametrize("entry, problem", [
    ({"choices": ["a", "b", "c", "d"]}, "missing or empty question text"),
    ({"question": "  ", "choices": ["a", "b", "c", "d"]}, "missing or empty question text"),
    ({"question": "Q?", "choices": ["a", "b", "c"]}, "need exactly 4 choices, got 3"),
    ({"question": "Q?", "choices": ["a", "", "c", "d"]}, "choice B is empty"),
    ({"question": "Q?", "choices": ["A) ", "b", "c", "d"]}, "choice A is empty"),
    ({"question": "Q?", "choices": {"A": "a", "B": "b", "C": "c"}}, "keys A, B, C, D"),
    ({"question": "Q?"}, "missing choices"),
    ("just a string", "not an object"),
    (None, "not an object"),
])
def test_malformed_entries_get_a_valid_object_naming_the_problem(tiny_model, entry, problem):
    """A malformed entry inside a batch: it gets a valid object; its neighbours are answered normally."""
    model, tok = tiny_model
    records = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=3)).answer_all([ENTRIES[0], entry, ENTRIES[1]])
    assert all(check_answer(r.output()) == [] for r in records)
    assert records[1].status == "malformed" and problem in records[1].reasoning
    assert records[0].status != "malformed" and records[2].status != "malformed"


def test_slow_model_still_answers_every_item_inside_the_deadline(tiny_model):
    """0.1 s per forward pass and a 1 s deadline in batch mode: generation stops early, every answer is valid and
    final within the deadline of its batch's start, no thread is left."""
    model, tok = tiny_model
    threads = threading.active_count()
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=200, deadline_s=1.0, batch_size=2))
    with SlowForward(model, 0.1):
        records = agent.answer_all(ENTRIES)
    assert [r.batch for r in records] == [0, 0, 1, 1]
    for rec in records:
        assert rec.time_s < 1.0
        assert rec.stopped_by_deadline and 0 < rec.reasoning_tokens < 200
        assert check_answer(rec.output()) == []
    assert threading.active_count() == threads


def test_a_forward_pass_longer_than_the_deadline_is_cut_by_the_backstop(tiny_model):
    """A single 3 s forward pass against a 0.5 s deadline: the alarm ends it; the default letter comes back."""
    model, tok = tiny_model
    threads = threading.active_count()
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=20, deadline_s=0.5))
    with SlowForward(model, 3.0):
        records = agent.answer_all(ENTRIES[:2])
    assert all(r.status == "timeout" and r.time_s < 0.6 and check_answer(r.output()) == [] for r in records)
    assert threading.active_count() == threads
    assert agent.answer_all(ENTRIES[:1])[0].status != "timeout"  # the model works normally afterwards


def test_tokens_written_before_the_backstop_fires_are_kept(tiny_model):
    """Steps of 0.02 s, then one of 3 s (a stall no per-step prediction sees coming): the alarm ends generate; the
    letters and the reasoning tokens written before the stall are kept, inside the deadline."""
    import time

    model, tok = tiny_model
    calls = {"n": 0}

    def stall(*_):
        calls["n"] += 1
        time.sleep(3.0 if calls["n"] == 12 else 0.02)

    handle = model.model.layers[0].register_forward_hook(stall)
    try:
        records = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=200, deadline_s=1.0)).answer_all(ENTRIES[:2])
    finally:
        handle.remove()
    for rec in records:
        assert rec.time_s < 1.0 and rec.status != "timeout" and rec.stopped_by_deadline
        assert 0 < rec.reasoning_tokens < 12 and check_answer(rec.output()) == []


def test_reasoning_is_cut_to_the_word_limit(tiny_model):
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=300, reasoning_words=5))
    rec = agent.answer_all(ENTRIES[:1])[0]
    assert len(rec.reasoning.split()) <= 5 and rec.reasoning


def test_parse_entry_strips_tournament_prefixes():
    q = parse_entry({"question": "Q?", "choices": ["A) one", "B) two", "C) three", "D) four"]})
    assert q == make_question("Q?", ["one", "two", "three", "four"], "A")
