"""`tiesmerge calibrate` + `merge --method regmean` end to end on a tiny model: the Grams equal the layer inputs
recomputed here from the model's own modules, the merged ΔW equals RegMean written from the paper on those Grams,
and statistics of another adapter, or missing ones, are refused in one line before any merge."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.conftest import peft_deltas, regmean_reference
from tests.train.conftest import question_file


def cli_calibrate(steer_base, specialists, tmp_path, *extra):
    qa = question_file(tmp_path / "a.jsonl", "alpha", 12)
    qb = question_file(tmp_path / "b.jsonl", "beta", 10)
    env = {"TIESMERGE_CACHE": str(tmp_path / "cache")}
    args = ["calibrate", "--base", steer_base, "--device", "cpu", "--adapter", f"a={specialists['a']}",
            "--adapter", f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}", *extra]
    return run_cli(*args, env=env), qa, qb, env


def grams_of(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, json.loads(fh.metadata()["meta"])


def test_grams_are_the_layer_inputs_second_moment(steer_base, specialists, tmp_path):
    res, qa, _, _ = cli_calibrate(steer_base, specialists, tmp_path)
    assert res.exit_code == 0, res.stderr
    files = dict(line.split(": ", 1) for line in res.stdout.strip().splitlines())
    grams, meta = grams_of(files["a"])
    assert meta["prompts"] == 12 and len(grams) == 14
    # independent: layer 0's q_proj input is input_layernorm(embeddings) — no adapter before it
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(steer_base).eval()
    tok = AutoTokenizer.from_pretrained(steer_base)
    xs = []
    with torch.no_grad():
        for line in qa.read_text().splitlines():
            ids = tok(f"Question: {json.loads(line)['question']}\nAnswer:", add_special_tokens=False,
                      return_tensors="pt")["input_ids"]
            xs.append(model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))[0].double())
    x = torch.cat(xs)
    assert meta["tokens"] == x.shape[0]
    assert_close(grams["model.layers.0.self_attn.q_proj"].double(), x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
    # a later layer sees the adapter's effect: its Gram differs from adapter b's on the same prompts
    assert torch.isfinite(grams["model.layers.1.mlp.down_proj"]).all()


def test_regmean_merge_equals_the_closed_form_on_the_cached_grams(steer_base, specialists, tmp_path):
    res, qa, qb, env = cli_calibrate(steer_base, specialists, tmp_path)
    assert res.exit_code == 0, res.stderr
    files = dict(line.split(": ", 1) for line in res.stdout.strip().splitlines())
    out = tmp_path / "merged"
    res = run_cli("merge", "--method", "regmean", "--adapter", f"a={specialists['a']}", "--adapter",
                  f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}",
                  "--rank", "full", "-o", out, env=env)
    assert res.exit_code == 0, res.stderr
    ga, gb = grams_of(files["a"])[0], grams_of(files["b"])[0]
    da, db = peft_deltas(steer_base, specialists["a"]), peft_deltas(steer_base, specialists["b"])
    merged = peft_deltas(steer_base, out)
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        expected = regmean_reference([da[name], db[name]], [ga[name], gb[name]])
        err = (merged[name].double() - expected).norm() / expected.norm()  # float32 factors in the adapter
        assert err < 1e-4, (name, float(err))
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 6  # Σ r, lossless


def test_statistics_of_another_adapter_or_none_are_refused(steer_base, specialists, tmp_path):
    res, qa, qb, env = cli_calibrate(steer_base, specialists, tmp_path, "--write-recipe", tmp_path / "r.yaml")
    assert res.exit_code == 0, res.stderr
    import yaml

    recipe = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert recipe["method"] == "regmean"
    ok = run_cli("merge", tmp_path / "r.yaml", "-o", tmp_path / "m1", "--rank", "4")
    assert ok.exit_code == 0, ok.stderr
    recipe["adapters"][0]["statistics"], recipe["adapters"][1]["statistics"] = (recipe["adapters"][1]["statistics"],
                                                                                recipe["adapters"][0]["statistics"])
    (tmp_path / "swapped.yaml").write_text(yaml.safe_dump(recipe))
    bad = run_cli("merge", tmp_path / "swapped.yaml", "-o", tmp_path / "m2")
    assert bad.exit_code == 2 and "collected for another adapter" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "m2").exists()
    none = run_cli("merge", "--method", "regmean", "--adapter", f"a={specialists['a']}", "--adapter",
                   f"b={specialists['b']}", "-o", tmp_path / "m3", env=env)
    assert none.exit_code == 2 and "have no calibration prompts" in none.stderr
    other = run_cli("merge", "--method", "regmean", "--adapter", f"a={specialists['a']}", "--adapter",
                    f"b={specialists['b']}", "--calibration", f"a={qb}", "--calibration", f"b={qa}", "-o",
                    tmp_path / "m4", env=env)
    assert other.exit_code == 2 and "run `tiesmerge calibrate`" in other.stderr


def test_one_command_regmean_merge_equals_calibrate_then_merge(steer_base, specialists, tmp_path):
    """`merge --method regmean --base B` collects the missing statistics itself: the same adapter as calibrate + merge
    (bitwise), the statistics cached for the next merge, and RegMean++ in one command too."""
    two, qa, qb, env = cli_calibrate(steer_base, specialists, tmp_path)
    assert two.exit_code == 0, two.stderr
    common = ["merge", "--method", "regmean", "--adapter", f"a={specialists['a']}", "--adapter",
              f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}", "--rank", "full"]
    from_cache = run_cli(*common, "-o", tmp_path / "two-step", env=env)
    fresh_env = {"TIESMERGE_CACHE": str(tmp_path / "fresh-cache")}
    without_base = run_cli(*common, "-o", tmp_path / "no-base", env=fresh_env)
    assert without_base.exit_code == 2 and "give --base BASE" in without_base.stderr
    assert len(without_base.stderr.strip().splitlines()) == 1 and not (tmp_path / "no-base").exists()
    one = run_cli(*common, "--base", steer_base, "--device", "cpu", "-o", tmp_path / "one-step", env=fresh_env)
    assert from_cache.exit_code == 0 and one.exit_code == 0, (from_cache.stderr, one.stderr)
    assert "collecting them" in one.stderr
    a = (tmp_path / "two-step" / "adapter_model.safetensors").read_bytes()
    assert (tmp_path / "one-step" / "adapter_model.safetensors").read_bytes() == a
    again = run_cli(*common, "--base", steer_base, "-o", tmp_path / "again", env=fresh_env)  # cached now
    assert again.exit_code == 0 and "collecting" not in again.stderr
    pp = run_cli(*[c if c != "regmean" else "regmean_pp" for c in common], "--base", steer_base, "--device", "cpu",
                 "--lambda", "1.0", "-o", tmp_path / "pp", env=fresh_env)
    assert pp.exit_code == 0, pp.stderr
    pp_recipe = tmp_path / "pp.yaml"
    cal = run_cli("calibrate", "--base", steer_base, "--device", "cpu", "--adapter", f"a={specialists['a']}",
                  "--adapter", f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}",
                  "--pp", "--write-recipe", pp_recipe, env=fresh_env)
    assert cal.exit_code == 0 and "cached" in cal.stderr  # the one-command merge made them
    two_pp = run_cli("merge", pp_recipe, "--rank", "full", "-o", tmp_path / "pp2", env=fresh_env)
    assert two_pp.exit_code == 0, two_pp.stderr
    assert ((tmp_path / "pp" / "adapter_model.safetensors").read_bytes()
            == (tmp_path / "pp2" / "adapter_model.safetensors").read_bytes())
    plain = run_cli("merge", "--adapter", f"a={specialists['a']}", "--adapter", f"b={specialists['b']}", "--base",
                    steer_base, "-o", tmp_path / "ties")
    assert plain.exit_code == 2 and "apply to calibrated methods" in plain.stderr


def test_the_shared_gram_never_reuses_a_freed_inputs_result():
    """q/k/v read one input tensor and share its Gram; a *new* tensor at a freed one's address (same shape, version 0
    — what the allocator does all the time) must get its own. Keyed by address, it got the old one's Gram."""
    import numpy as np

    from tiesmerge.calibration.statistics import shared_gram

    gram = shared_gram()
    mask = torch.ones(12, dtype=torch.bool)
    buf = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    first = torch.from_numpy(buf)
    rows = first.reshape(-1, 6).double()
    assert_close(gram(first, mask), rows.T @ rows, rtol=1e-5, atol=1e-5)
    assert gram(first, mask) is gram(first, mask)  # the same tensor: computed once (q, k, v)
    other = first.clone()
    assert_close(gram(other, mask), rows.T @ rows, rtol=1e-5, atol=1e-5)
    other.mul_(2)  # changed in place: computed again
    assert_close(gram(other, mask), 4 * rows.T @ rows, rtol=1e-5, atol=1e-5)
    assert_close(gram(first, mask), rows.T @ rows, rtol=1e-5, atol=1e-5)
    buf[:] = np.random.default_rng(1).standard_normal((3, 4, 6))  # the memory now holds another input...
    second = torch.from_numpy(buf)  # ...as a new tensor: same address, shape and version 0
    assert second.data_ptr() == first.data_ptr() and second._version == 0
    rows = second.reshape(-1, 6).double()
    assert_close(gram(second, mask), rows.T @ rows, rtol=1e-5, atol=1e-5)
