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


def test_statistics_of_another_dtype_or_a_replaced_base_are_not_reused(setup):
    """The statistics cache is keyed by adapter and prompts; the file's metadata names the base's fingerprint, dtype
    and quantization, so a bfloat16 run's statistics are not reused for float32, nor an old base's for a new one
    at the same path; and a merge refuses a set collected differently."""
    import json

    from safetensors import safe_open

    s = setup
    base = s["tmp"] / "base"
    shutil.copytree(s["base"], base)

    def calibrate(*extra):
        res = run_cli("calibrate", "--base", base, "--device", "cpu", *s["flags"], *extra, env=s["env"])
        assert res.exit_code == 0, res.stderr
        files = dict(line.split(": ", 1) for line in res.stdout.strip().splitlines())
        with safe_open(files["a"], framework="pt") as fh:
            return res, files, json.loads(fh.metadata()["meta"])["collected_with"]

    _, files, bf16 = calibrate("--dtype", "bfloat16")
    assert bf16["dtype"] == "bfloat16" and bf16["base_fingerprint"]
    res, _, fp32 = calibrate("--dtype", "float32")
    assert fp32["dtype"] == "float32" and "collecting them again" in res.stderr
    res, _, again = calibrate("--dtype", "float32")
    assert again == fp32 and "statistics cached" in res.stderr  # same setup: reused
    import os

    weights = base / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # replaced in place
    res, _, replaced = calibrate("--dtype", "float32")
    assert replaced["base_fingerprint"] != fp32["base_fingerprint"] and "collecting them again" in res.stderr
    # a set collected two ways is refused by the merge, in one line
    b_file = s["tmp"] / "b-bf16.safetensors"
    calibrate_b = run_cli("calibrate", "--base", base, "--device", "cpu", "--dtype", "bfloat16", "--adapter",
                          f"b={s['b']}", "--calibration", f"b={s['qb']}", env={"TIESMERGE_CACHE": str(s["tmp"] / "c2")})
    assert calibrate_b.exit_code == 0, calibrate_b.stderr
    shutil.copy(calibrate_b.stdout.strip().split(": ", 1)[1], b_file)
    recipe = s["tmp"] / "mixed.yaml"
    recipe.write_text(f"method: regmean\nadapters:\n  - {{name: a, path: {s['a']}, statistics: {files['a']}}}\n"
                      f"  - {{name: b, path: {s['b']}, statistics: {b_file}}}\n")
    res = run_cli("merge", recipe, "-o", s["tmp"] / "m")
    assert res.exit_code == 2 and "different base weights, dtypes or quantization" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (s["tmp"] / "m").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0"])
def test_calibrate_pp_refuses_a_lambda_that_is_not_a_finite_in_range_number(setup, value):
    s = setup
    res = run_cli("calibrate", "--base", s["base"], "--device", "cpu", *s["flags"], "--pp", "--lambda", value,
                  env=s["env"])
    assert res.exit_code == 2 and "--lambda" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (s["tmp"] / "cache" / "statistics-pp").exists()


def test_calibration_and_test_file_problems_are_named_for_what_they_are(setup):
    s = setup
    import os

    fifo = s["tmp"] / "fifo.jsonl"
    os.mkfifo(fifo)
    cases = {
        ("--calibration", f"a={s['tmp']}"): "is a folder",
        ("--calibration", f"a={fifo}"): "is not a regular file",
        ("--calibration", "a=builtin:math:test"): "leaks the evaluation",
        ("--test", s["tmp"] / "missing.jsonl"): "--test file",
    }
    adapters = ["--adapter", f"a={s['a']}", "--adapter", f"b={s['b']}", "--calibration", f"b={s['qb']}"]
    for (flag, value), words in cases.items():
        flags = adapters if flag == "--calibration" else s["flags"]
        res = run_cli("calibrate", "--base", s["base"], "--device", "cpu", *flags, flag, value, env=s["env"])
        assert res.exit_code == 2 and words in res.stderr, (flag, value, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1
        if flag == "--test":
            assert "calibration file" not in res.stderr


def test_refine_refuses_a_start_merged_on_another_base(setup):
    from tests.cli.helpers import with_config

    s = setup
    start = with_config(s["a"], s["tmp"] / "start", base_model_name_or_path="someone/other-base")
    common = ["refine", "--base", s["base"], "--device", "cpu", *s["flags"], "--start", start, "--steps", "1"]
    res = run_cli(*common, "-o", s["tmp"] / "r", env=s["env"])
    assert res.exit_code == 2 and "different base models" in res.stderr and "--start" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (s["tmp"] / "r").exists()
    ok = run_cli(*common, "--allow-base-mismatch", "-o", s["tmp"] / "r2", env=s["env"])  # the flag it names exists
    assert ok.exit_code == 0, ok.stderr


def test_refine_names_a_broken_start_instead_of_blaming_the_learning_rate(setup):
    import torch
    from safetensors.torch import load_file, save_file

    s = setup
    start = s["tmp"] / "nan-start"
    shutil.copytree(s["a"], start)
    weights = load_file(start / "adapter_model.safetensors")
    key = sorted(weights)[0]
    weights[key][0, 0] = torch.nan
    save_file(weights, start / "adapter_model.safetensors")
    res = run_cli("refine", "--base", s["base"], "--device", "cpu", *s["flags"], "--start", start, "--steps", "1",
                  "-o", s["tmp"] / "r", env=s["env"])
    assert res.exit_code == 2 and "NaN or infinite" in res.stderr and "--lr" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (s["tmp"] / "r").exists()
    assert not list(s["tmp"].glob(".r*"))  # no hidden checkpoint left beside the output


def test_a_prompt_longer_than_the_limit_keeps_its_end_with_a_note(setup):
    """A 100 000-character calibration prompt is not fed whole: it keeps its last MAX_PROMPT_TOKENS tokens (the part
    the continuation follows), and calibrate says so."""
    import json

    from transformers import AutoTokenizer

    from tiesmerge.calibration.prompts import MAX_PROMPT_TOKENS, encode_prompt

    s = setup
    tok = AutoTokenizer.from_pretrained(s["base"])
    text = "word " * 20000 + "the end"
    ids = encode_prompt(tok, text)
    assert len(ids) == MAX_PROMPT_TOKENS and ids == tok(text, add_special_tokens=False)["input_ids"][-MAX_PROMPT_TOKENS:]
    long_file = s["tmp"] / "long.jsonl"
    long_file.write_text(json.dumps({"question": "x " * 50000 + "what?"}) + "\n" + s["qa"].read_text())
    res = run_cli("calibrate", "--base", s["base"], "--device", "cpu", "--adapter", f"a={s['a']}",
                  "--calibration", f"a={long_file}", env=s["env"])
    assert res.exit_code == 0, res.stderr
    assert f"keeps its last {MAX_PROMPT_TOKENS}" in res.stderr


def test_a_signal_during_refine_start_up_leaves_no_hidden_checkpoint(setup, monkeypatch):
    """SIGTERM while the start merge is made or the teachers run (before any checkpoint): one line, 128 + 15, and
    no `.OUT.refine-checkpoint/` left beside the output (it held only the start merge; nothing to resume)."""
    import signal

    from tiesmerge.cli.common import Interrupted
    from tiesmerge.train import refine

    def interrupted(*args, **kwargs):
        assert (s["tmp"] / ".r.refine-checkpoint" / "start" / "adapter_config.json").is_file()  # the start was made
        raise Interrupted(signal.SIGTERM)

    s = setup
    monkeypatch.setattr(refine, "prepare", interrupted)
    res = run_cli("refine", "--base", s["base"], "--device", "cpu", *s["flags"], "--steps", "1", "-o", s["tmp"] / "r",
                  env=s["env"])
    assert res.exit_code == 128 + signal.SIGTERM, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SIGTERM" in errors[0] and res.stderr.strip().splitlines()[-1] == errors[0]
    assert not (s["tmp"] / ".r.refine-checkpoint").exists() and not (s["tmp"] / "r").exists()
