"""Question files: the three formats round-trip; bad rows fail naming the line unless skipped."""

from __future__ import annotations

import csv
import json

import pytest

from tiesmerge.errors import BadInputError
from tiesmerge.eval.loaders import load_questions
from tiesmerge.eval.questions import make_question

pytestmark = pytest.mark.core

QS = [
    make_question("What is 2 + 2?", ["3", "4", "5", "6"], "B", "math"),
    make_question("Capital of Peru?", ["Lima", "Quito", "La Paz", "Bogotá"], "A", "humanities"),
    make_question("Which, \"quoted\", option?", ["x, y", "z", "w", "v"], "D", "stem"),
]


def write_jsonl(path, qs):
    path.write_text("".join(json.dumps({"question": q.question, "choices": list(q.choices), "answer": q.answer,
                                        "domain": q.domain}) + "\n" for q in qs))


def write_csv(path, qs, header=True):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(["question", "A", "B", "C", "D", "answer"])
        for q in qs:
            w.writerow([q.question, *q.choices, q.answer])


def write_tournament(path, qs, as_dict=False):
    items = []
    for q in qs:
        choices = dict(zip("ABCD", q.choices)) if as_dict else [f"{l}) {c}" for l, c in zip("ABCD", q.choices)]
        items.append({"topic": q.domain, "question": q.question, "choices": choices, "answer": q.answer,
                      "explanation": "because"})
    path.write_text(json.dumps(items))


def key(q):
    return (q.question, q.choices, q.answer)


def test_round_trip_all_formats(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", QS)
    write_csv(tmp_path / "q.csv", QS)
    write_csv(tmp_path / "noheader.csv", QS, header=False)
    write_tournament(tmp_path / "t.json", QS)
    write_tournament(tmp_path / "d.json", QS, as_dict=True)
    for name in ("q.jsonl", "q.csv", "noheader.csv", "t.json", "d.json"):
        got = load_questions(tmp_path / name).questions
        assert [key(q) for q in got] == [key(q) for q in QS], name
    assert [q.domain for q in load_questions(tmp_path / "q.jsonl").questions] == ["math", "humanities", "stem"]
    assert [q.domain for q in load_questions(tmp_path / "t.json").questions] == ["math", "humanities", "stem"]
    assert {q.domain for q in load_questions(tmp_path / "q.csv", domain="x").questions} == {"x"}


@pytest.mark.parametrize("line,needle", [
    ('{"question": "q", "choices": ["a", "b", "c"], "answer": "A"}', "need exactly 4 choices"),
    ('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": "E"}', "answer must be one of"),
    ('{"question": "", "choices": ["a", "b", "c", "d"], "answer": "A"}', "empty question"),
    ('{"question": "q", "choices": ["a", "a", "c", "d"], "answer": "A"}', "not distinct"),
    ('{not json', "not valid JSON"),
])
def test_bad_jsonl_row_names_the_line(tmp_path, line, needle):
    path = tmp_path / "q.jsonl"
    write_jsonl(path, QS[:2])
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(BadInputError, match=rf"q.jsonl:3: .*{needle}"):
        load_questions(path)
    res = load_questions(path, skip_invalid=True)
    assert len(res.questions) == 2 and len(res.skipped) == 1 and ":3:" in res.skipped[0]


def test_bad_csv_and_tournament_rows(tmp_path):
    path = tmp_path / "q.csv"
    write_csv(path, QS[:1])
    path.write_text(path.read_text() + "only,three,cols\n")
    with pytest.raises(BadInputError, match=r"q.csv:3: expected 6 columns"):
        load_questions(path)
    t = tmp_path / "t.json"
    t.write_text(json.dumps([{"question": "q", "choices": {"A": 1, "B": 2, "C": 3}, "answer": "A"}]))
    with pytest.raises(BadInputError, match=r"item 1: choices dict"):
        load_questions(t)
    with pytest.raises(BadInputError, match="unknown question format"):
        load_questions(tmp_path / "x.txt") if (tmp_path / "x.txt").write_text("x") else None
    with pytest.raises(BadInputError, match="not found"):
        load_questions(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("answer,want", [("B", "B"), ("b", "B"), ("(C)", "C"), ("D)", "D"), ("A.", "A"),
                                         (2, "C"), (0, "A"), ("Paris", "B")])
def test_answer_forms(answer, want):
    assert make_question("Capital of France?", ["Rome", "Paris", "Oslo", "Bern"], answer).answer == want


@pytest.mark.parametrize("answer", ["E", 4, -1, "London", None, True, 1.0])
def test_bad_answers(answer):
    from tiesmerge.eval.questions import InvalidQuestion

    with pytest.raises(InvalidQuestion, match="answer must be"):
        make_question("Capital of France?", ["Rome", "Paris", "Oslo", "Bern"], answer)
