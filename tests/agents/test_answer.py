"""The answer agent: letters as eval scores them, reasoning from the prompt's cache, deadlines, malformed input."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.agents.conftest import SlowForward
from tiesmerge.agents.answer import AnswerAgent, parse_entry
from tiesmerge.agents.config import AnswerSettings
from tiesmerge.agents.schema import check_answer
from tiesmerge.eval.questions import make_question
from tiesmerge.eval.scoring import build_prompt, score_letters

ENTRIES = [
    {"question": "What is 2 + 2?", "choices": ["A) 3", "B) 4", "C) 5", "D) 6"]},
    {"question": "What is the capital of France?", "choices": {"A": "Paris", "B": "Rome", "C": "Oslo", "D": "Bern"}},
    {"question": "Which is a prime?", "choices": ["9", "15", "7", "21"], "topic": "math"},
]


def test_letters_match_eval_scoring(tiny_model):
    """The agent's single-question forward pass picks the letter eval's batched scorer picks, with its log-probs."""
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=4))
    questions = [parse_entry(e) for e in ENTRIES]
    reference = score_letters(model, tok, questions, batch_size=3, reuse_prefix=False)
    for q, ref in zip(questions, reference):
        letter, logprobs, _, _ = agent.choose(q)
        assert letter == ref.predicted
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(ref.logprobs), atol=1e-4, rtol=0)


def test_reasoning_continues_from_the_prompt_cache(tiny_model):
    """Generating from the letter pass's KV cache gives the tokens a fresh greedy generate gives."""
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=12, deadline_s=5.0))
    q = parse_entry(ENTRIES[0])
    letter, _, ids, cache = agent.choose(q)
    from tiesmerge.agents.deadline import Deadline

    text, ntok, stopped = agent.reason(q, letter, ids, cache, Deadline(5.0))
    full = tok(build_prompt(tok, q) + f"{letter}) {q.choices['ABCD'.index(letter)]}\nExplanation:",
               add_special_tokens=False, return_tensors="pt")["input_ids"]
    ref = model.generate(input_ids=full, attention_mask=torch.ones_like(full), max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    assert ntok == 12 and not stopped
    assert text == tok.decode(ref[0, full.shape[1]:], skip_special_tokens=True)


def test_output_shape_for_list_and_dict_choices(tiny_model):
    model, tok = tiny_model
    records = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=30)).answer_all(ENTRIES)
    assert [r.index for r in records] == [0, 1, 2]
    for rec in records:
        assert check_answer(rec.output()) == []
        assert rec.status == "ok" and rec.reasoning_tokens > 0
    # the dict form and the list form of the same question give the same answer
    same = [{"question": "Q?", "choices": ["A) w", "B) x", "C) y", "D) z"]},
            {"question": "Q?", "choices": {"A": "w", "B": "x", "C": "y", "D": "z"}}]
    a, b = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=3)).answer_all(same)
    assert a.output() == b.output()


@pytest.mark.parametrize("entry, problem", [
    ({"choices": ["a", "b", "c", "d"]}, "missing or empty question text"),
    ({"question": "  ", "choices": ["a", "b", "c", "d"]}, "missing or empty question text"),
    ({"question": "Q?", "choices": ["a", "b", "c"]}, "need exactly 4 choices, got 3"),
    ({"question": "Q?", "choices": ["a", "", "c", "d"]}, "choice B is empty"),
    ({"question": "Q?", "choices": ["A) ", "b", "c", "d"]}, "choice A is empty"),
    ({"question": "Q?", "choices": {"A": "a", "B": "b", "C": "c"}}, "keys A, B, C, D"),
    ({"question": "Q?"}, "missing choices"),
    ("just a string", "not an object"),
])
def test_malformed_entries_get_a_valid_object_naming_the_problem(tiny_model, entry, problem):
    model, tok = tiny_model
    rec = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=3)).answer_one(entry)
    assert check_answer(rec.output()) == []
    assert rec.status == "malformed" and problem in rec.reasoning


def test_slow_model_still_answers_inside_the_deadline(tiny_model):
    """0.1 s per forward pass and a 1 s deadline: generation stops early, the answer is valid, no thread is left."""
    model, tok = tiny_model
    threads = threading.active_count()
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=200, deadline_s=1.0))
    with SlowForward(model, 0.1):
        records = agent.answer_all(ENTRIES[:2])
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
        rec = agent.answer_one(ENTRIES[0])
    assert rec.status == "timeout" and rec.time_s < 0.6
    assert check_answer(rec.output()) == []
    assert threading.active_count() == threads
    assert agent.answer_one(ENTRIES[0]).status == "ok"  # the model works normally afterwards


def test_reasoning_is_cut_to_the_word_limit(tiny_model):
    model, tok = tiny_model
    agent = AnswerAgent(model, tok, AnswerSettings(max_new_tokens=300, reasoning_words=5))
    rec = agent.answer_one(ENTRIES[0])
    assert len(rec.reasoning.split()) <= 5 and rec.reasoning


def test_parse_entry_strips_tournament_prefixes():
    q = parse_entry({"question": "Q?", "choices": ["A) one", "B) two", "C) three", "D) four"]})
    assert q == make_question("Q?", ["one", "two", "three", "four"], "A")
