"""`tiesmerge eval` and `tiesmerge data build` end to end on the tiny base."""

from __future__ import annotations

import csv
import json

from tests.cli.helpers import run_cli
from tiesmerge.eval.loaders import load_questions


def _questions(path, domain, n=6):
    rows = [{"question": f"{domain} question {i}?", "choices": [f"a{i}", f"b{i}", f"c{i}", f"d{i}"],
             "answer": "ABCD"[i % 4]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_base_specialists_and_merged(tiny_base, adapter_set, tmp_path):
    math = _questions(tmp_path / "math.jsonl", "math")
    code = _questions(tmp_path / "code.jsonl", "code", n=5)
    merged = tmp_path / "merged"
    assert run_cli("merge", "--adapter", f"a={adapter_set['rs8']}:0.5", "--adapter", f"b={adapter_set['plain4']}:0.5",
                   "--density", "0.5", "--rank", "8", "-o", merged).exit_code == 0
    out = tmp_path / "out"
    res = run_cli("eval", "--base", tiny_base, "--device", "cpu", "--adapter", f"rs8={adapter_set['rs8']}",
                  "--adapter", f"plain4={adapter_set['plain4']}", "--merged", f"ties={merged}",
                  "--specialist", "rs8=math", "--specialist", "plain4=code",
                  "--data", f"math={math}", "--data", f"code={code}", "--batch-size", "4", "--out", out)
    assert res.exit_code == 0, res.output + res.stderr
    data = json.loads((out / "results.json").read_text())
    assert [t["name"] for t in data["targets"]] == ["base", "rs8", "plain4", "ties"]
    assert data["domains"] == ["code", "math"] and data["specialist_of"] == {"math": "rs8", "code": "plain4"}
    cells = {(c["target"], c["domain"]): c for c in data["cells"]}
    assert cells[("base", "math")]["n"] == 6 and cells[("base", "code")]["n"] == 5
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 * 11
    for target in ("base", "rs8", "plain4", "ties"):
        for domain in ("math", "code"):
            mine = [p for p in preds if p["adapter"] == target and p["domain"] == domain]
            correct = sum(p["predicted"] == p["gold"] for p in mine)
            assert cells[(target, domain)]["correct"] == correct
            assert all(max(p["logprobs"], key=p["logprobs"].get) == p["predicted"] for p in mine)
    # normalized accuracy and gain retention recomputed from the cells
    m = data["merged"]["ties"]
    acc = {k: v["accuracy"] for k, v in cells.items()}
    t, s, b = acc[("ties", "math")], acc[("rs8", "math")], acc[("base", "math")]
    assert m["normalized"]["math"] == (t / s if s > 0 else None)
    assert m["gain_retention"]["math"] == ((t - b) / (s - b) if s != b else None)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 8 and {r["kind"] for r in rows} == {"base", "adapter", "merged"}
    assert "latency" in data and data["latency"]["base"]["questions_per_s"] > 0


def test_eval_bad_file_exits_2_naming_the_line(tiny_base, tmp_path):
    path = _questions(tmp_path / "q.jsonl", "math", n=3)
    path.write_text(path.read_text() + '{"question": "x", "choices": ["a"], "answer": "A"}\n')
    res = run_cli("eval", "--base", tiny_base, "--data", f"math={path}", "--device", "cpu")
    assert res.exit_code == 2 and "q.jsonl:4" in res.stderr and "--skip-invalid" in res.stderr
    res = run_cli("eval", "--base", tiny_base, "--data", f"math={path}", "--device", "cpu", "--skip-invalid")
    assert res.exit_code == 0 and "skipped 1 invalid row" in res.stderr


def test_eval_refuses_unknown_base_and_mode(tmp_path):
    q = _questions(tmp_path / "q.jsonl", "math", n=2)
    res = run_cli("eval", "--base", tmp_path / "nope", "--data", str(q), "--device", "cpu")
    assert res.exit_code == 2 and "cannot load base model" in res.stderr
    res = run_cli("eval", "--base", "x", "--data", str(q), "--mode", "vibes")
    assert res.exit_code == 2 and "--mode" in res.stderr


def test_data_build_writes_splits_and_manifest(tmp_path):
    out = tmp_path / "data"
    res = run_cli("data", "build", "--out", out, "--n-per-domain", "40", "--seed", "3")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["splits"]["test"] == {"math": 8, "code": 8, "stem": 8, "humanities": 8}
    assert manifest["data_packages"]["holidays"] != "missing"
    for split in ("train", "validation", "test"):
        for domain in ("math", "code", "stem", "humanities"):
            qs = load_questions(out / split / f"{domain}.jsonl").questions
            assert len(qs) == manifest["splits"][split][domain] and {q.domain for q in qs} == {domain}
