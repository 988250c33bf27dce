"""No command that writes may replace or delete one of its inputs (issue 32, the classes fixed so far): the recipe
`calibrate --write-recipe` writes is checked — before any statistics are computed — against the adapters, the base,
the recipe, the calibration and test files; `merge` / `refine -o DIR --force` against every input they read, not only
the adapters. Each refusal: exit 2, one line, inputs byte-identical, nothing written."""

from __future__ import annotations

import shutil

import pytest

from tests.cli.helpers import run_cli
from tests.train.conftest import question_file


def snapshot(*paths):
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        out |= {f: f.read_bytes() for f in files}
    return out


@pytest.fixture()
def setup(steer_base, specialists, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(specialists["a"], a)
    shutil.copytree(specialists["b"], b)
    qa = question_file(tmp_path / "qa.jsonl", "alpha", 8)
    qb = question_file(tmp_path / "qb.jsonl", "beta", 8)
    env = {"TIESMERGE_CACHE": str(tmp_path / "cache")}
    flags = ["--adapter", f"a={a}", "--adapter", f"b={b}", "--calibration", f"a={qa}", "--calibration", f"b={qb}"]
    return {"a": a, "b": b, "qa": qa, "qb": qb, "env": env, "flags": flags, "base": steer_base, "tmp": tmp_path}


@pytest.mark.parametrize("target", ["adapter_config", "calibration", "base_weights", "folder", "missing_parent"])
def test_calibrate_write_recipe_never_replaces_an_input(setup, target):
    s = setup
    where = {"adapter_config": s["a"] / "adapter_config.json", "calibration": s["qa"],
             "base_weights": s["base"] / "model.safetensors", "folder": s["tmp"],
             "missing_parent": s["tmp"] / "nowhere" / "r.yaml"}[target]
    before = snapshot(s["a"], s["qa"], s["base"] / "model.safetensors", s["base"] / "config.json")
    res = run_cli("calibrate", "--base", s["base"], "--device", "cpu", *s["flags"], "--write-recipe", where,
                  env=s["env"])
    assert res.exit_code == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--write-recipe" in lines[0], lines
    assert snapshot(s["a"], s["qa"], s["base"] / "model.safetensors", s["base"] / "config.json") == before
    assert not (s["tmp"] / "cache" / "statistics").exists()  # refused before any statistics were computed
    assert not list(s["tmp"].glob(".*.tmp-*")) and not list(s["a"].glob(".*"))


def test_calibrate_write_recipe_is_written_atomically(setup):
    s = setup
    out = s["tmp"] / "r.yaml"
    res = run_cli("calibrate", "--base", s["base"], "--device", "cpu", *s["flags"], "--write-recipe", out,
                  env=s["env"])
    assert res.exit_code == 0, res.stderr
    import yaml

    assert yaml.safe_load(out.read_text())["method"] == "regmean"
    assert [p.name for p in s["tmp"].iterdir() if p.name.startswith(".")] == []


def test_merge_force_refuses_an_output_holding_its_recipe_or_calibration(setup):
    s = setup
    out = s["tmp"] / "out"
    out.mkdir()
    recipe = out / "recipe.yaml"
    recipe.write_text(f"method: ties\nadapters:\n  - {{name: a, path: {s['a']}}}\n  - {{name: b, path: {s['b']}}}\n")
    before = snapshot(recipe)
    res = run_cli("merge", recipe, "-o", out, "--force")
    assert res.exit_code == 2 and "overlaps the recipe" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and snapshot(recipe) == before
    cal = out / "cal.jsonl"
    shutil.copy(s["qa"], cal)
    calibrated = ["merge", "--method", "regmean", "--base", s["base"], "--adapter", f"a={s['a']}", "--adapter",
                  f"b={s['b']}", "--calibration", f"a={cal}", "--calibration", f"b={s['qb']}", "-o", out, "--force"]
    res = run_cli(*calibrated, env=s["env"])
    assert res.exit_code == 2 and "overlaps the calibration file of 'a'" in res.stderr, res.stderr
    assert cal.read_bytes() == s["qa"].read_bytes() and recipe.is_file()


def test_refine_force_refuses_an_output_holding_a_calibration_or_test_file(setup):
    s = setup
    out = s["tmp"] / "refined"
    out.mkdir()
    test = question_file(out / "test.jsonl", "gamma", 4)
    before = snapshot(test)
    res = run_cli("refine", "--base", s["base"], "--device", "cpu", *s["flags"], "--test", test, "-o", out,
                  "--force", "--steps", "1", env=s["env"])
    assert res.exit_code == 2 and "overlaps the --test file" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and snapshot(test) == before
    shutil.copy(s["qa"], out / "qa.jsonl")
    flags = [f if f != f"a={s['qa']}" else f"a={out / 'qa.jsonl'}" for f in s["flags"]]
    res = run_cli("refine", "--base", s["base"], "--device", "cpu", *flags, "-o", out, "--force", "--steps", "1",
                  env=s["env"])
    assert res.exit_code == 2 and "overlaps the calibration file of 'a'" in res.stderr, res.stderr
    assert (out / "qa.jsonl").read_bytes() == s["qa"].read_bytes() and test.is_file()
