"""One front door (issue 32): calibrate, refine, evaluate, merge-with-statistics and the recipe builder reached from
Python give what the CLI gives, and refuse the same bad inputs with the same one-line message — side by side."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import tiesmerge
from tests.cli.helpers import run_cli
from tests.train.conftest import question_file
from tiesmerge.errors import BadInputError


@pytest.fixture()
def setup(steer_base, specialists, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(specialists["a"], a)
    shutil.copytree(specialists["b"], b)
    qa = question_file(tmp_path / "qa.jsonl", "alpha", 8)
    qb = question_file(tmp_path / "qb.jsonl", "beta", 8)
    monkeypatch.setenv("TIESMERGE_CACHE", str(tmp_path / "cache"))
    flags = ["--adapter", f"a={a}", "--adapter", f"b={b}", "--calibration", f"a={qa}", "--calibration", f"b={qb}"]
    return {"a": a, "b": b, "qa": qa, "qb": qb, "flags": flags, "base": steer_base, "tmp": tmp_path,
            "adapters": {"a": a, "b": b}, "calibration": {"a": qa, "b": qb}}


def error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0].removeprefix("error: ")


def test_calibrate_and_a_calibrated_merge_from_python_equal_the_cli(setup):
    s = setup
    res = run_cli("calibrate", "--base", s["base"], "--device", "cpu", *s["flags"])
    assert res.exit_code == 0, res.stderr
    cli_files = dict(line.split(": ", 1) for line in res.stdout.strip().splitlines())
    done = tiesmerge.calibrate(base=str(s["base"]), adapters=s["adapters"], calibration=s["calibration"], device="cpu")
    assert {k: str(v) for k, v in done.files.items()} == cli_files  # the same cached statistics, reused
    res = run_cli("merge", "--method", "regmean", *s["flags"], "--rank", "4", "-o", s["tmp"] / "cli")
    assert res.exit_code == 0, res.stderr
    tiesmerge.merge(adapters=s["adapters"], calibration=s["calibration"], method="regmean", rank=4,
                    output=s["tmp"] / "api")
    from safetensors.torch import load_file

    cli, api = (load_file(s["tmp"] / d / "adapter_model.safetensors") for d in ("cli", "api"))
    assert cli.keys() == api.keys()
    for k in cli:
        torch.testing.assert_close(api[k], cli[k], rtol=0, atol=0)


def test_calibrate_refuses_the_same_bad_inputs_with_the_same_line(setup):
    s = setup
    cases = [  # (CLI flags, API keywords)
        (["--write-recipe", s["a"] / "adapter_config.json"], {"write_recipe": s["a"] / "adapter_config.json"}),
        (["--pp", "--lambda", "nan"], {"pp": True, "lam": float("nan")}),
        (["--pp", "--off-diagonal", "1", "--lambda", "0"], {"pp": True, "lam": 0.0}),
        (["--calibration-size", "4", "--test", s["qa"]], {"size": 4, "test": s["qa"]}),
    ]
    before = s["a"].joinpath("adapter_config.json").read_bytes()
    for flags, kwargs in cases:
        line = error_line(run_cli("calibrate", "--base", s["base"], "--device", "cpu", *s["flags"], *map(str, flags)))
        with pytest.raises(BadInputError) as exc:
            tiesmerge.calibrate(base=str(s["base"]), adapters=s["adapters"], calibration=s["calibration"],
                                device="cpu", **kwargs)
        assert str(exc.value) == line, flags
    assert s["a"].joinpath("adapter_config.json").read_bytes() == before
    assert not (s["tmp"] / "cache").exists()  # every refusal came before any statistics


def test_refine_from_python_checks_what_the_cli_checks(setup):
    s = setup
    out = s["tmp"] / "refined"
    out.mkdir()
    shutil.copy(s["qa"], out / "qa.jsonl")
    cases = [  # (CLI flags, API keywords)
        (["--lr", "nan"], {"lr": float("nan")}),
        (["--steps", "0"], {"steps": 0}),
        (["--target", "soup"], {"target": "soup"}),
        (["--start", s["tmp"]], {"start": s["tmp"]}),
    ]
    for flags, kwargs in cases:
        line = error_line(run_cli("refine", "--base", s["base"], "--device", "cpu", *s["flags"], *map(str, flags),
                                  "-o", s["tmp"] / "r"))
        with pytest.raises(BadInputError) as exc:
            tiesmerge.refine(base=str(s["base"]), adapters=s["adapters"], calibration=s["calibration"],
                             device="cpu", output=s["tmp"] / "r", **kwargs)
        assert str(exc.value) == line, flags
    # an output holding an input (a calibration file) is refused by both, the file kept
    calibration = {"a": out / "qa.jsonl", "b": s["qb"]}
    line = error_line(run_cli("refine", "--base", s["base"], "--device", "cpu", "--adapter", f"a={s['a']}",
                              "--adapter", f"b={s['b']}", "--calibration", f"a={out / 'qa.jsonl'}", "--calibration",
                              f"b={s['qb']}", "-o", out, "--force"))
    with pytest.raises(BadInputError) as exc:
        tiesmerge.refine(base=str(s["base"]), adapters=s["adapters"], calibration=calibration, device="cpu",
                         output=out, force=True)
    assert str(exc.value) == line and "overlaps the calibration file of 'a'" in line
    assert (out / "qa.jsonl").read_bytes() == s["qa"].read_bytes()
    with pytest.raises(TypeError, match="unknown setting"):
        tiesmerge.refine(base=str(s["base"]), adapters=s["adapters"], calibration=s["calibration"], output=out,
                         learning_rate=1e-3)
    assert not (s["tmp"] / "r").exists() and not list(s["tmp"].glob(".r*"))


def test_evaluate_from_python_equals_the_cli(setup):
    s = setup
    questions = question_file(s["tmp"] / "eval.jsonl", "gamma", 12)
    res = run_cli("eval", "--base", s["base"], "--device", "cpu", "--adapter", f"a={s['a']}", "--merged",
                  f"m={s['b']}", "--data", questions, "--out", s["tmp"] / "cli-eval")
    assert res.exit_code == 0, res.stderr
    result = tiesmerge.evaluate(str(s["base"]), adapters={"a": s["a"]}, merged={"m": s["b"]}, data=[questions],
                                device="cpu", out=s["tmp"] / "api-eval")
    cli = json.loads((s["tmp"] / "cli-eval" / "results.json").read_text())
    api = json.loads((s["tmp"] / "api-eval" / "results.json").read_text())
    assert api["cells"] == cli["cells"] and len(cli["cells"]) == 3  # base, a and m on one domain
    cell = next(c for c in cli["cells"] if c["target"] == "m")
    assert result.cell("m", cell["domain"])["correct"] == cell["correct"]
    # the same refusal from both: an output folder that is an input
    line = error_line(run_cli("eval", "--base", s["base"], "--adapter", f"a={s['a']}", "--data", questions,
                              "--out", s["a"], "--force"))
    with pytest.raises(BadInputError) as exc:
        tiesmerge.evaluate(str(s["base"]), adapters={"a": s["a"]}, data=[questions], out=s["a"], force=True)
    assert str(exc.value) == line
    assert (s["a"] / "adapter_config.json").is_file()


def test_one_recipe_builder_a_new_method_drops_what_it_does_not_read_in_both(setup, tmp_path):
    s = setup
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: ties\nparameters: {{density: 0.3}}\nadapters:\n  - {{name: a, path: {s['a']}}}\n"
                      f"  - {{name: b, path: {s['b']}}}\n")
    res = run_cli("merge", recipe, "--method", "iso_c", "--dry-run")
    assert res.exit_code == 0 and "does not read the recipe's density" in res.stderr, res.stderr
    plan = tiesmerge.plan_merge(recipe, method="iso_c")
    assert plan.recipe.method.value == "iso_c" and any("density" in n for n in plan.notes)
    for bad in ("ab", b"ab"):  # a string is never a list of adapters
        with pytest.raises(TypeError, match="string"):
            tiesmerge.merge(adapters=bad, output=tmp_path / "x")
    with pytest.raises(BadInputError, match="not both"):
        tiesmerge.merge(recipe, adapters=s["adapters"], output=tmp_path / "x")
    assert error_line(run_cli("merge", recipe, "--adapter", f"a={s['a']}", "-o", tmp_path / "x")).startswith(
        "adapters come from the recipe")
