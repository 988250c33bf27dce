"""RegMean++ statistics: block 0 sees the base (its q/k/v Grams equal plain RegMean's), block 1 sees the model with
block 0's RegMean merge folded in (recomputed here from the hidden states of a base patched by hand), and a merge
with other settings than the statistics were collected for is refused in one line."""

from __future__ import annotations

import torch
import yaml
from safetensors import safe_open
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.conftest import peft_deltas, regmean_reference
from tests.train.conftest import question_file


def grams(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k).double() for k in fh.keys()}


def test_regmean_pp_statistics_follow_the_partially_merged_model(steer_base, specialists, tmp_path):
    import json

    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 10), question_file(tmp_path / "b.jsonl", "beta", 10)
    env = {"TIESMERGE_CACHE": str(tmp_path / "cache")}
    common = ["calibrate", "--base", steer_base, "--device", "cpu", "--adapter", f"a={specialists['a']}",
              "--adapter", f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}"]
    plain = run_cli(*common, env=env)
    pp = run_cli(*common, "--pp", "--off-diagonal", "0.9", "--write-recipe", tmp_path / "pp.yaml", env=env)
    assert plain.exit_code == 0 and pp.exit_code == 0, (plain.stderr, pp.stderr)
    plain_files = dict(line.split(": ", 1) for line in plain.stdout.strip().splitlines())
    recipe = yaml.safe_load((tmp_path / "pp.yaml").read_text())
    assert recipe["method"] == "regmean_pp" and recipe["parameters"]["off_diagonal"] == 0.9
    pp_g = {e["name"]: grams(e["statistics"]) for e in recipe["adapters"]}
    q0 = "model.layers.0.self_attn.q_proj"
    assert_close(pp_g["a"][q0], grams(plain_files["a"])[q0], rtol=1e-5, atol=1e-7)

    # block 1's input: the base with block 0's RegMean merge (from the pp Grams) folded in, adapters off
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(steer_base).eval()
    tok = AutoTokenizer.from_pretrained(steer_base)
    da, db = peft_deltas(steer_base, specialists["a"]), peft_deltas(steer_base, specialists["b"])
    with torch.no_grad():
        for name, lin in model.named_modules():
            if name.startswith("model.layers.0.") and name in da:
                merged = regmean_reference([da[name], db[name]], [pp_g["a"][name], pp_g["b"][name]],
                                           off_diagonal=0.9)
                lin.weight += merged.float()
        xs = []
        for line in qa.read_text().splitlines():
            ids = tok(f"Question: {json.loads(line)['question']}\nAnswer:", add_special_tokens=False,
                      return_tensors="pt")["input_ids"]
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
            xs.append(model.model.layers[1].input_layernorm(h)[0].double())
    x = torch.cat(xs)
    q1 = "model.layers.1.self_attn.q_proj"
    assert_close(pp_g["a"][q1], x.T @ x / x.shape[0], rtol=2e-3, atol=1e-5)
    assert not torch.allclose(pp_g["a"][q1], grams(plain_files["a"])[q1], rtol=1e-3)  # it is not plain RegMean's

    ok = run_cli("merge", tmp_path / "pp.yaml", "-o", tmp_path / "m", "--rank", "6")
    assert ok.exit_code == 0, ok.stderr
    other = run_cli("merge", tmp_path / "pp.yaml", "-o", tmp_path / "m2", "--lambda", "2")
    assert other.exit_code == 2 and "collected for a merge with other lambda" in other.stderr
    wrong = run_cli("merge", tmp_path / "pp.yaml", "-o", tmp_path / "m3", "--method", "regmean")
    assert wrong.exit_code == 2 and "inputs of the merged model" in wrong.stderr
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()
